//! A lean GET for objects that come in one request (up to `part_size`) and for ranges of an
//! object (a streaming recall's chunks, pack spans): the request the SDK would send for
//! GetObject (the same endpoint, resolved once by the SDK's own resolver; the same SigV4
//! signature; the same timeouts) without the SDK's per-request orchestration: config
//! layers, interceptors, endpoint and auth scheme resolution, retry bookkeeping and the
//! typed output, which together cost more CPU than the request itself on a recall of many
//! small files. On an `http://` endpoint its HTTP client is hyper's with streams that ACK
//! at once (src/store/quickack.rs: a server's Nagle and the kernel's delayed ACK otherwise
//! stall responses ~40 ms); on an `https://` one, or behind a proxy, the SDK's own client
//! and connection pool.
//!
//! Only a 200 (a 206 for a range) with the expected length is taken. Anything else (an
//! error status, a connection failure) returns `None` and the caller makes the request
//! again through the SDK, which retries, classifies the error and reports it as for every
//! other request; a 400 or 403 also turns the lean path off for the life of the store (a
//! server that wants something this request lacks). The content is checked end to end by
//! the caller either way (its checksum against the stub record, a chunk's sum).
//!
//! Used only with an explicit `endpoint` (S3-compatible servers, where the resolved
//! endpoint depends on nothing but the config); on AWS the SDK path serves every request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sdk_s3::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::primitives::ByteStream;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_async::time::SystemTimeSource;
use aws_smithy_runtime::client::auth::no_auth::{NoAuthScheme, NO_AUTH_SCHEME_ID};
use aws_smithy_runtime::client::identity::no_auth::NoAuthIdentityResolver;
use aws_smithy_runtime::client::identity::IdentityCache;
use aws_smithy_runtime::client::orchestrator::endpoints::StaticUriEndpointResolver;
use aws_smithy_runtime::client::retries::strategy::NeverRetryStrategy;
use aws_smithy_runtime_api::client::auth::static_resolver::StaticAuthSchemeOptionResolver;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
use parking_lot::Mutex;

use super::S3Config;

/// Credentials are fetched again this long before they expire ...
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// ... and ones without an expiry this long after they were fetched (the SDK's identity
/// cache keeps those 15 minutes too: keys rotated in a profile file are picked up).
const REFRESH_EVERY: Duration = Duration::from_secs(900);

/// The HTTP client the SDK would make for itself (rustls, proxy settings from the
/// environment ...), made here so that the SDK's requests and the lean GETs share it and
/// its connection pool.
pub(crate) fn default_http_client() -> Option<aws_sdk_s3::config::SharedHttpClient> {
    use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;
    let plugin = aws_smithy_runtime::client::defaults::default_http_client_plugin_v2(
        aws_sdk_s3::config::BehaviorVersion::latest(),
    )?;
    plugin
        .runtime_components(&RuntimeComponentsBuilder::new("coldtier-http-client"))
        .http_client()
}

/// What a lean GET got: the body to stream, the version it is of.
pub(crate) struct LeanObject {
    pub body: ByteStream,
    pub version_id: Option<String>,
}

pub(crate) struct LeanGet {
    /// The resolved endpoint with the bucket (path style) or host (virtual hosted), no
    /// trailing `/`: the key's encoded path follows.
    base: String,
    signing_region: String,
    connector: SharedHttpConnector,
    /// The quick-ACK client, when it is the connector (tests: is it in use?).
    quick: Option<super::quickack::QuickAckHttp>,
    provider: SharedCredentialsProvider,
    credentials: Mutex<Option<(Credentials, std::time::Instant)>>,
    enabled: AtomicBool,
    /// GETs served so far (tests: is the lean path in use?).
    pub(crate) served: AtomicU64,
}

impl std::fmt::Debug for LeanGet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanGet").field("base", &self.base).finish()
    }
}

impl LeanGet {
    /// The lean path for `client`, or why it does not apply (no explicit endpoint, an
    /// endpoint the resolver does not give plain SigV4 for, no HTTP client ...).
    pub(crate) async fn new(
        client: &aws_sdk_s3::Client,
        cfg: &S3Config,
        shared: &aws_config::SdkConfig,
    ) -> Result<LeanGet, String> {
        let endpoint = cfg.endpoint.as_deref().ok_or("no explicit endpoint")?;
        let params = Params::builder()
            .bucket(&cfg.bucket)
            .region(&cfg.region)
            .endpoint(endpoint)
            .force_path_style(cfg.path_style)
            .use_fips(shared.use_fips().unwrap_or(false))
            .use_dual_stack(shared.use_dual_stack().unwrap_or(false))
            .build()
            .map_err(|e| format!("endpoint parameters: {e}"))?;
        let resolved = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map_err(|e| format!("endpoint: {e}"))?;
        let signing_region = plain_sigv4_region(&resolved)
            .ok_or_else(|| format!("endpoint {resolved:?} is not plain SigV4 for s3"))?;
        let base = resolved.url().trim_end_matches('/').to_string();
        let http = client
            .config()
            .http_client()
            .ok_or("no HTTP client in the SDK config")?;
        let provider = shared
            .credentials_provider()
            .ok_or("no credentials provider")?;
        let components = RuntimeComponentsBuilder::new("coldtier-lean-get")
            .with_http_client(Some(http.clone()))
            .with_sleep_impl(Some(TokioSleep::new()))
            .with_time_source(Some(SystemTimeSource::new()))
            // Required by the builder, unused by an HTTP connector.
            .with_auth_scheme_option_resolver(Some(StaticAuthSchemeOptionResolver::new(vec![
                NO_AUTH_SCHEME_ID,
            ])))
            .with_auth_scheme(NoAuthScheme::new())
            .with_identity_resolver(NO_AUTH_SCHEME_ID, NoAuthIdentityResolver::new())
            .with_identity_cache(Some(IdentityCache::no_cache()))
            .with_endpoint_resolver(Some(StaticUriEndpointResolver::uri(base.clone())))
            .with_retry_strategy(Some(NeverRetryStrategy::new()))
            .build()
            .map_err(|e| format!("runtime components: {e}"))?;
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(cfg.connect_timeout().map_err(|e| e.to_string())?)
            .read_timeout(cfg.first_byte_timeout().map_err(|e| e.to_string())?)
            .build();
        let quick = (base.starts_with("http://")
            && super::quickack::QuickAckHttp::no_proxy_in_env())
        .then(|| {
            super::quickack::QuickAckHttp::new(
                settings.connect_timeout().unwrap_or(Duration::from_secs(3)),
                settings.read_timeout().unwrap_or(Duration::from_secs(10)),
            )
        });
        let connector = match &quick {
            Some(q) => SharedHttpConnector::new(q.clone()),
            None => http.http_connector(&settings, &components),
        };
        Ok(LeanGet {
            base,
            signing_region,
            connector,
            quick,
            provider,
            credentials: Mutex::new(None),
            enabled: AtomicBool::new(true),
            served: AtomicU64::new(0),
        })
    }

    /// GET `full_key` (a version of it): the body if the answer is a 200 of `size` bytes,
    /// else None (the caller asks the SDK).
    pub(crate) async fn get(
        &self,
        full_key: &str,
        version_id: Option<&str>,
        size: u64,
    ) -> Option<LeanObject> {
        self.fetch(full_key, version_id, None, size).await
    }

    /// GET bytes `[start, start + len)` of `full_key` (a version of it), an object of `size`
    /// bytes: the body if the answer is a 206 of exactly that range of an object of that
    /// size, else None (the caller asks the SDK).
    pub(crate) async fn get_range(
        &self,
        full_key: &str,
        version_id: Option<&str>,
        (start, len): (u64, u64),
        size: u64,
    ) -> Option<LeanObject> {
        if len == 0 || start.checked_add(len).is_none_or(|end| end > size) {
            return None;
        }
        self.fetch(full_key, version_id, Some((start, len)), size)
            .await
    }

    async fn fetch(
        &self,
        full_key: &str,
        version_id: Option<&str>,
        range: Option<(u64, u64)>,
        size: u64,
    ) -> Option<LeanObject> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let creds = self.credentials().await?;
        let mut url = format!("{}/{}", self.base, encode_path(full_key));
        if let Some(v) = version_id {
            url.push_str("?versionId=");
            url.push_str(&encode_query(v));
        }
        let range_header = range.map(|(start, len)| format!("bytes={start}-{}", start + len - 1));
        let request = self.signed(&url, range_header.as_deref(), creds)?;
        let response = match self.connector.call(request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(key = full_key, "lean GET: {e}; asking the SDK");
                return None;
            }
        };
        let status = response.status().as_u16();
        if status != if range.is_some() { 206 } else { 200 } {
            if status == 400 || status == 403 {
                self.enabled.store(false, Ordering::Relaxed);
                tracing::warn!(
                    key = full_key,
                    status,
                    "lean GET refused: every GET goes through the SDK from now on"
                );
            }
            return None;
        }
        let headers = response.headers();
        let length = headers
            .get("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        if length != Some(range.map_or(size, |r| r.1)) {
            return None;
        }
        if let Some((start, len)) = range {
            let want = format!("bytes {start}-{}/{size}", start + len - 1);
            if headers.get("content-range") != Some(want.as_str()) {
                return None;
            }
        }
        let version_id = headers
            .get("x-amz-version-id")
            .filter(|v| !v.is_empty() && *v != "null")
            .map(str::to_string);
        self.served.fetch_add(1, Ordering::Relaxed);
        Some(LeanObject {
            body: ByteStream::new(response.into_body()),
            version_id,
        })
    }

    /// Quick ACKs its HTTP client asked for, if it is the quick-ACK one.
    pub(crate) fn quickacks(&self) -> Option<u64> {
        self.quick.as_ref().map(|q| q.quickacks())
    }

    /// Whether a 400 or 403 turned the lean path off.
    pub(crate) fn refused(&self) -> bool {
        !self.enabled.load(Ordering::Relaxed)
    }

    /// The credentials to sign with, fetched again when they near their expiry.
    async fn credentials(&self) -> Option<Credentials> {
        if let Some((c, fetched)) = self.credentials.lock().as_ref() {
            let fresh = match c.expiry() {
                Some(e) => e > SystemTime::now() + REFRESH_BEFORE,
                None => fetched.elapsed() < REFRESH_EVERY,
            };
            if fresh {
                return Some(c.clone());
            }
        }
        match self.provider.provide_credentials().await {
            Ok(c) => {
                *self.credentials.lock() = Some((c.clone(), std::time::Instant::now()));
                Some(c)
            }
            Err(e) => {
                tracing::debug!("lean GET: credentials: {e}; asking the SDK");
                None
            }
        }
    }

    /// A GET of `url` (of a `range`, signed with it) signed as the SDK signs S3 requests
    /// (SigV4 in headers, the payload hash in x-amz-content-sha256, the path as encoded,
    /// not normalised).
    fn signed(&self, url: &str, range: Option<&str>, creds: Credentials) -> Option<HttpRequest> {
        let identity = Identity::from(creds);
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.signing_region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .ok()?
            .into();
        let headers = range.map(|r| ("range", r));
        let signable =
            SignableRequest::new("GET", url, headers.into_iter(), SignableBody::Bytes(&[])).ok()?;
        let (instructions, _) = sign(signable, &params).ok()?.into_parts();
        let mut request = HttpRequest::get(url).ok()?;
        if let Some(r) = range {
            request.headers_mut().insert("range", r.to_string());
        }
        for (name, value) in instructions.headers() {
            request
                .headers_mut()
                .insert(name.to_string(), value.to_string());
        }
        Some(request)
    }
}

/// The signing region of an endpoint whose only auth scheme is plain SigV4 for "s3".
fn plain_sigv4_region(e: &aws_sdk_s3::config::endpoint::Endpoint) -> Option<String> {
    use aws_smithy_types::Document;
    let Some(Document::Array(schemes)) = e.properties().get("authSchemes") else {
        return None;
    };
    let [Document::Object(scheme)] = schemes.as_slice() else {
        return None;
    };
    let text = |k: &str| match scheme.get(k) {
        Some(Document::String(s)) => Some(s.as_str()),
        _ => None,
    };
    if text("name") != Some("sigv4") || text("signingName") != Some("s3") {
        return None;
    }
    if !matches!(
        scheme.get("disableDoubleEncoding"),
        Some(Document::Bool(true))
    ) {
        return None;
    }
    text("signingRegion").map(str::to_string)
}

/// A key as a URL path: every byte but the unreserved ones and `/` percent-encoded (what
/// the SDK sends for S3's greedy key label).
fn encode_path(key: &str) -> String {
    encode(key, |b| b == b'/')
}

/// A query value: every byte but the unreserved ones percent-encoded.
fn encode_query(v: &str) -> String {
    encode(v, |_| false)
}

fn encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_as_the_sdk_sends_them() {
        assert_eq!(encode_path("p/data/ab12/0f"), "p/data/ab12/0f");
        assert_eq!(
            encode_path("dir é/ü 100%+x=y&z"),
            "dir%20%C3%A9/%C3%BC%20100%25%2Bx%3Dy%26z"
        );
        assert_eq!(encode_query("a/b+c"), "a%2Fb%2Bc");
    }
}
