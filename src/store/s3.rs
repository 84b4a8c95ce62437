//! The S3 store: with `s3_lean` (its lean GET) and `s3_stream` (its streamed PUT), the only
//! code that names aws-sdk-s3 types. Single PUT up to the part size, else a multipart upload
//! with parts in parallel (bounded), aborted on failure, or one streamed PUT on a store whose
//! multipart answers prove nothing while its PUTs' do;
//! our own checksum sent with every PUT and part (composite form for multipart); ranged
//! parallel GETs pinned to one version; RestoreObject for archive classes; SDK errors
//! mapped exhaustively to `StoreError`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aws_sdk_s3 as s3;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, GlacierJobParameters,
    RestoreRequest, ServerSideEncryption, Tag, Tagging, Tier,
};
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::s3_lean::LeanGet;
use super::*;

/// Body bytes gathered before one pwrite ...
const WRITE_CHUNK: usize = 4 << 20;
/// ... and when a reader waits on the progress of the range (`GetRequest::progress`: a
/// bulk recall's pack span, whose members each wait for their own bytes): a member is told
/// its bytes are there a quarter as late. Packed recall of 2,000 x 64 KiB in 16 MiB packs
/// on s3s-fs, six interleaved pairs: 0.55-0.64 s against 0.55-0.70 s (medians 0.59 /
/// 0.63).
const PROGRESS_CHUNK: usize = 1 << 20;

/// An S3 (or S3-compatible) store.
#[derive(Clone)]
pub struct S3Store {
    client: s3::Client,
    cfg: Arc<S3Config>,
    /// The lean GET of one-request objects (see `s3_lean`), where it applies.
    lean: Option<Arc<LeanGet>>,
    /// `stall_timeout`: the longest wait for the next bytes of a body.
    stall: Duration,
    /// The timeouts of an upload: `read_timeout` until the answer (the body counts).
    upload_timeouts: TimeoutConfig,
    /// The ranged GETs of whole objects in flight, all downloads together
    /// ([`DOWNLOAD_RANGES_PER_STORE`] x `concurrency`): what bounds their buffers when a
    /// bulk recall fetches many large files at once.
    download_ranges: Arc<Semaphore>,
    /// What the store check found out about this store (shared by its clones): single
    /// PUTs proven by the answer, multipart answers not. Objects above `part_size` (up to
    /// 5 GiB) then go in one streamed PUT (`s3_stream`) instead of parts read back.
    learned: Arc<Learned>,
    /// Whether upload bodies are signed (`S3Config::signs_payload`), decided once.
    sign_payload: bool,
}

#[derive(Debug, Default)]
struct Learned {
    /// `validates_checksums` found that the store refuses a body that does not match.
    validates: AtomicBool,
    /// `multipart_proven` found that a multipart answer carries no proof.
    multipart_unproven: AtomicBool,
}

/// Ranged GETs in flight for one object: this many times `concurrency` (a download is
/// worth twice the parallelism of an upload: 1 GiB on s3s-fs, `coldtier recall` with 8
/// ranges in flight 3.6-3.8 s against 4.6-4.8 s with 4, rclone's copy back 4.1-4.9 s) ...
const DOWNLOAD_RANGES_PER_OBJECT: usize = 2;
/// ... and for all downloads of the store together.
const DOWNLOAD_RANGES_PER_STORE: usize = 4;

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Sets the `x-amz-checksum-<algo>` value on any builder that has the four setters.
macro_rules! with_checksum {
    ($b:expr, $algo:expr, $v:expr) => {
        match $algo {
            ChecksumAlgo::Crc32c => $b.checksum_crc32_c($v),
            ChecksumAlgo::Crc32 => $b.checksum_crc32($v),
            ChecksumAlgo::Sha1 => $b.checksum_sha1($v),
            ChecksumAlgo::Sha256 => $b.checksum_sha256($v),
        }
    };
}

/// Reads the `x-amz-checksum-<algo>` value from any output that has the four getters.
macro_rules! checksum_of {
    ($o:expr, $algo:expr) => {
        match $algo {
            ChecksumAlgo::Crc32c => $o.checksum_crc32_c(),
            ChecksumAlgo::Crc32 => $o.checksum_crc32(),
            ChecksumAlgo::Sha1 => $o.checksum_sha1(),
            ChecksumAlgo::Sha256 => $o.checksum_sha256(),
        }
    };
}

/// Applies storage class, metadata, tags and SSE to a PutObject or CreateMultipartUpload.
macro_rules! with_object_settings {
    ($b:expr, $self:expr, $class:expr, $meta:expr, $tags:expr) => {{
        let mut b = $b
            .storage_class(s3::types::StorageClass::from($class.as_str()))
            .set_metadata(Some($meta));
        if !$tags.is_empty() {
            b = b.tagging(encode_tagging(&$tags));
        }
        if let Some(sse) = &$self.cfg.sse {
            b = b.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        if let Some(k) = &$self.cfg.sse_kms_key_id {
            b = b.ssekms_key_id(k);
        }
        b
    }};
}

/// A CopyObject's source: bucket/key, URL-encoded, pinned to the version.
fn copy_source(bucket: &str, full_key: &str, version_id: Option<&str>) -> String {
    let mut source = format!(
        "{bucket}/{}",
        percent_encode(full_key, |b| b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/'))
    );
    if let Some(v) = version_id {
        source.push_str(&format!(
            "?versionId={}",
            percent_encode(v, |b| b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~'))
        ));
    }
    source
}

/// The file of a body the streamed and multipart uploads read part by part (a body in
/// memory goes in one PUT: [`S3Store::put`]).
fn file_of(body: PutBody) -> Result<std::fs::File, StoreError> {
    match body {
        PutBody::File(f) => Ok(f),
        PutBody::Memory(_) => Err(StoreError::new(
            StoreErrorKind::Other,
            "a body in memory goes in one PUT",
        )),
    }
}

fn sdk_algo(a: ChecksumAlgo) -> ChecksumAlgorithm {
    match a {
        ChecksumAlgo::Crc32c => ChecksumAlgorithm::Crc32C,
        ChecksumAlgo::Crc32 => ChecksumAlgorithm::Crc32,
        ChecksumAlgo::Sha1 => ChecksumAlgorithm::Sha1,
        ChecksumAlgo::Sha256 => ChecksumAlgorithm::Sha256,
    }
}

impl S3Store {
    /// Builds the client: static credentials from the config, else the standard chain
    /// (environment, shared config/credentials files and profile, web identity, ECS, IMDS).
    pub async fn new(cfg: &S3Config) -> Result<Self, StoreError> {
        cfg.validate()?;
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(cfg.region.clone()));
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let (Some(a), Some(s)) = (&cfg.access_key, &cfg.secret_key) {
            loader = loader.credentials_provider(Credentials::new(
                a,
                s,
                cfg.session_token.clone(),
                None,
                "coldtier-config",
            ));
        }
        let shared = loader.load().await;
        // Every request waits at most `first_byte_timeout` for its answer, uploads (whose
        // body counts) `read_timeout`: see `upload_timeouts`.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(cfg.connect_timeout()?)
            .read_timeout(cfg.first_byte_timeout()?)
            .build();
        let stall = cfg.stall_timeout()?;
        let calc = match cfg.request_checksum {
            RequestChecksum::WhenSupported => RequestChecksumCalculation::WhenSupported,
            RequestChecksum::WhenRequired => RequestChecksumCalculation::WhenRequired,
        };
        // GETs are checked end to end by us (the hash of what was written to the file
        // against the stub record): the SDK's own pass over each body (asked for with
        // `x-amz-checksum-mode` under WhenSupported) would be a second one.
        let validate = ResponseChecksumValidation::WhenRequired;
        let mut b = s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(cfg.max_attempts))
            .request_checksum_calculation(calc)
            .response_checksum_validation(validate)
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(stall)
                    .build(),
            );
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep);
        }
        if let Some(http) = super::s3_lean::default_http_client() {
            b = b.http_client(http);
        }
        let client = s3::Client::from_conf(b.build());
        let lean = match LeanGet::new(&client, cfg, &shared).await {
            Ok(l) => Some(Arc::new(l)),
            Err(why) => {
                tracing::debug!("lean GET off: {why}; every GET goes through the SDK");
                None
            }
        };
        Ok(S3Store {
            client,
            cfg: Arc::new(cfg.clone()),
            lean,
            stall,
            upload_timeouts: TimeoutConfig::builder()
                .connect_timeout(cfg.connect_timeout()?)
                .read_timeout(cfg.read_timeout()?)
                .build(),
            download_ranges: Arc::new(Semaphore::new(
                cfg.concurrency.max(1) * DOWNLOAD_RANGES_PER_STORE,
            )),
            learned: Arc::default(),
            sign_payload: cfg.signs_payload(!super::quickack::QuickAckHttp::no_proxy_in_env()),
        })
    }

    /// Whether an object of `size` bytes goes in one streamed PUT (see `learned`).
    fn one_streamed_put(&self, size: u64) -> bool {
        size > self.cfg.part_size
            && size <= MAX_PART_SIZE
            && self.learned.validates.load(Ordering::Relaxed)
            && self.learned.multipart_unproven.load(Ordering::Relaxed)
    }

    /// The config of an upload request: `read_timeout` until its answer (the body counts).
    fn upload_config(&self) -> s3::config::Builder {
        s3::config::Builder::default().timeout_config(self.upload_timeouts.clone())
    }

    /// CopyObject of `source` onto `full` in this bucket, in `class`, with the source's
    /// metadata, this store's SSE and a checksum of `algo` made by the server.
    async fn copy_object_onto(
        &self,
        source: String,
        full: &str,
        class: &str,
        tags: s3::types::TaggingDirective,
        algo: ChecksumAlgo,
    ) -> Result<
        s3::operation::copy_object::CopyObjectOutput,
        s3::error::SdkError<s3::operation::copy_object::CopyObjectError>,
    > {
        let mut b = self
            .client
            .copy_object()
            .bucket(&self.cfg.bucket)
            .key(full)
            .copy_source(source)
            .storage_class(s3::types::StorageClass::from(class))
            .metadata_directive(s3::types::MetadataDirective::Copy)
            .tagging_directive(tags)
            .checksum_algorithm(sdk_algo(algo));
        if let Some(sse) = &self.cfg.sse {
            b = b.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        if let Some(k) = &self.cfg.sse_kms_key_id {
            b = b.ssekms_key_id(k);
        }
        b.customize()
            .config_override(self.upload_config())
            .send()
            .await
    }

    /// Whether this store's uploads sign their bodies (`S3Config::signs_payload`).
    #[doc(hidden)]
    pub fn signs_payload(&self) -> bool {
        self.sign_payload
    }

    /// GETs the lean path has served so far (None: it is off for this store).
    #[doc(hidden)]
    pub fn lean_gets(&self) -> Option<u64> {
        self.lean
            .as_ref()
            .map(|l| l.served.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Quick ACKs the lean GETs' HTTP client asked for (None: the lean path is off, or uses
    /// the SDK's client: an https:// endpoint, a proxy).
    #[doc(hidden)]
    pub fn lean_quickacks(&self) -> Option<u64> {
        self.lean.as_ref().and_then(|l| l.quickacks())
    }

    /// Whether a server refused a lean GET, which turned the lean path off.
    #[doc(hidden)]
    pub fn lean_refused(&self) -> bool {
        self.lean.as_ref().is_some_and(|l| l.refused())
    }

    pub(super) fn full_key(&self, key: &str) -> String {
        if self.cfg.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.cfg.prefix)
        }
    }

    fn strip_prefix<'k>(&self, full: &'k str) -> Option<&'k str> {
        if self.cfg.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(self.cfg.prefix.as_str())?
                .strip_prefix('/')
        }
    }

    /// The part size for an object of `size` bytes: the configured one, raised (to whole
    /// MiB) so that no upload needs more than 10,000 parts.
    pub fn part_size_for(&self, size: u64) -> u64 {
        let min = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
        self.cfg.part_size.max(min)
    }

    async fn put_single(
        &self,
        req: PutRequest,
        full: String,
        algo: ChecksumAlgo,
        class: StorageClass,
    ) -> Result<PutResult, StoreError> {
        let size = req.size;
        let body = req.body;
        let extents = req.extents;
        let want_md5 = self.cfg.content_md5;
        let (data, hashed) = blocking(move || {
            let data = match body {
                PutBody::Memory(b) if b.len() as u64 == size => b,
                body => {
                    let mut v = vec![0u8; size as usize];
                    body.read_mapped(extents.as_ref(), &mut v, 0)?;
                    Bytes::from(v)
                }
            };
            let mut cs = super::chunks::ChunkSummer::new(size);
            let crc = cs.update_crc(&data);
            let hashed = super::s3_stream::Hashed {
                checksum: Checksum::of_crc32c_or(algo, crc, &data),
                // The SDK hashes a body in memory itself.
                sha256_hex: None,
                md5: want_md5.then(|| content_md5(&data)),
                chunks: cs.finish(),
            };
            Ok((data, hashed))
        })
        .await?;
        super::UPLOAD_BW.take(size).await;
        let to = &(req.key, full);
        self.send_put(
            to,
            class,
            (&req.metadata, req.tags),
            (ByteStream::from(data), size),
            hashed,
            self.upload_timeouts.clone(),
        )
        .await
    }

    /// One PutObject of `body` (`size` bytes) to `key` (`full`, with the prefix), with
    /// what the reading of its bytes found (`hashed`: our checksum, sent; the payload hash
    /// to sign, for a body the SDK cannot hash itself; Content-MD5; the chunk sums).
    async fn send_put(
        &self,
        (key, full): &(String, String),
        class: StorageClass,
        (metadata, tags): (&BTreeMap<String, String>, BTreeMap<String, String>),
        (body, size): (ByteStream, u64),
        hashed: super::s3_stream::Hashed,
        timeouts: TimeoutConfig,
    ) -> Result<PutResult, StoreError> {
        let checksum = hashed.checksum;
        let algo = checksum.algo;
        let b = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(full)
            .content_length(size as i64)
            .body(body)
            .checksum_algorithm(sdk_algo(algo))
            .set_content_md5(hashed.md5);
        let b = with_checksum!(b, algo, checksum.base64());
        let b = with_object_settings!(b, self, class, encode_metadata(metadata), tags);
        let b = b
            .customize()
            .config_override(s3::config::Builder::default().timeout_config(timeouts));
        let b = match (hashed.sha256_hex, self.sign_payload) {
            (Some(h), _) => b.interceptor(super::s3_stream::SignedPayload(h)),
            (None, true) => b,
            (None, false) => b.disable_payload_signing(),
        };
        let out = b
            .send()
            .await
            .map_err(|e| map_err(&format!("PUT {full}"), e))?;
        Ok(PutResult {
            key: key.clone(),
            version_id: version(out.version_id()),
            etag: out.e_tag().map(str::to_string),
            expected: checksum.reported(),
            reported: checksum_of!(out, algo).map(|v| ReportedChecksum::parse(algo, v)),
            checksum,
            parts: 1,
            chunks: hashed.chunks,
        })
    }

    /// One PUT of an object above the part size, streamed from its file (`s3_stream`):
    /// for a store whose single PUTs its answer proves and whose multipart uploads it does
    /// not. Its answer waits for the whole body: the `read_timeout` of as many parts.
    async fn put_streamed(
        &self,
        req: PutRequest,
        full: String,
        algo: ChecksumAlgo,
        class: StorageClass,
    ) -> Result<PutResult, StoreError> {
        let size = req.size;
        let src = Arc::new(Dest {
            file: file_of(req.body)?,
            extents: req.extents,
        });
        let want_md5 = self.cfg.content_md5;
        let s = src.clone();
        let sign = self.sign_payload;
        let hashed =
            blocking(move || super::s3_stream::hash_file(&s, size, algo, want_md5, sign)).await?;
        self.send_streamed(
            req.key,
            &req.metadata,
            req.tags,
            (src, size),
            full,
            class,
            hashed,
        )
        .await
    }

    /// The request of [`Self::put_streamed`], given what its first pass found.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_streamed(
        &self,
        key: String,
        metadata: &BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
        (src, size): (Arc<Dest>, u64),
        full: String,
        class: StorageClass,
        hashed: super::s3_stream::Hashed,
    ) -> Result<PutResult, StoreError> {
        let parts = size.div_ceil(self.part_size_for(size)).max(1) as u32;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.cfg.connect_timeout()?)
            .read_timeout(self.cfg.read_timeout()? * parts)
            .build();
        let body = ByteStream::new(super::s3_stream::body(src, size));
        self.send_put(
            &(key, full),
            class,
            (metadata, tags),
            (body, size),
            hashed,
            timeouts,
        )
        .await
    }

    async fn put_multipart(
        &self,
        req: PutRequest,
        full: String,
        algo: ChecksumAlgo,
        class: StorageClass,
    ) -> Result<PutResult, StoreError> {
        let b = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(&full)
            .checksum_algorithm(sdk_algo(algo));
        let b = with_object_settings!(b, self, class, encode_metadata(&req.metadata), req.tags);
        let created = b
            .send()
            .await
            .map_err(|e| map_err(&format!("CreateMultipartUpload {full}"), e))?;
        let upload_id = created.upload_id().map(str::to_string).ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("CreateMultipartUpload {full}: no upload id in the answer"),
            )
        })?;
        match self
            .upload_parts(
                Dest {
                    file: file_of(req.body)?,
                    extents: req.extents,
                },
                req.size,
                &full,
                &upload_id,
                algo,
            )
            .await
        {
            Ok((checksum, parts, chunks)) => {
                let expected = composite_checksum(
                    algo,
                    &parts.iter().map(|p| p.2.clone()).collect::<Vec<_>>(),
                );
                let completed: Vec<CompletedPart> = parts
                    .iter()
                    .map(|(n, etag, sum)| {
                        let b = CompletedPart::builder().part_number(*n).e_tag(etag);
                        with_checksum!(b, algo, sum.base64()).build()
                    })
                    .collect();
                let n = completed.len() as u32;
                let out = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.cfg.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(completed))
                            .build(),
                    )
                    .send()
                    .await;
                let out = match out {
                    Ok(o) => o,
                    Err(e) => {
                        let err = map_err(&format!("CompleteMultipartUpload {full}"), e);
                        self.abort(&full, &upload_id).await;
                        return Err(err);
                    }
                };
                let version_id = version(out.version_id());
                let mut reported =
                    checksum_of!(out, algo).map(|v| ReportedChecksum::parse(algo, v));
                if reported.is_none() {
                    // moto (and some servers) leave the checksum out of the
                    // CompleteMultipartUpload answer: ask for that exact version's.
                    let key = req.key.as_str();
                    reported = self.head_impl(key, version_id.as_deref()).await?.checksum;
                }
                Ok(PutResult {
                    key: req.key,
                    version_id,
                    etag: out.e_tag().map(str::to_string),
                    reported,
                    expected,
                    checksum,
                    parts: n,
                    chunks,
                })
            }
            Err(e) => {
                self.abort(&full, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn abort(&self, full: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(full)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(
                "AbortMultipartUpload {full} {upload_id}: {}",
                map_err("abort", e)
            );
        }
    }

    /// Reads the parts in order (one pread per part, whole-object checksum on the way) and
    /// uploads up to `concurrency` of them at once; stops at the first failure.
    async fn upload_parts(
        &self,
        file: Dest,
        size: u64,
        full: &str,
        upload_id: &str,
        algo: ChecksumAlgo,
    ) -> Result<
        (
            Checksum,
            Vec<(i32, String, Checksum)>,
            Option<super::chunks::ChunkSums>,
        ),
        StoreError,
    > {
        let part_size = self.part_size_for(size);
        let nparts = size.div_ceil(part_size);
        let file = Arc::new(file);
        let sem = Arc::new(Semaphore::new(self.cfg.concurrency));
        let mut tasks: JoinSet<Result<(i32, String, Checksum), StoreError>> = JoinSet::new();
        let mut done: Vec<(i32, String, Checksum)> = Vec::with_capacity(nparts as usize);
        // SHA cannot be combined from the parts: hash the whole object as it is read.
        let mut full_hasher = (!algo.is_crc()).then(|| Hasher::new(algo));
        // The parts are read in order: the chunk sums are taken on the way.
        let mut summer = Some(super::chunks::ChunkSummer::new(size));
        let want_md5 = self.cfg.content_md5;
        let result: Result<(), StoreError> = async {
            for i in 0..nparts {
                let permit = sem
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore never closed");
                while let Some(r) = tasks.try_join_next() {
                    done.push(joined(r)?);
                }
                let off = i * part_size;
                let len = part_size.min(size - off) as usize;
                let f = file.clone();
                let mut fh = full_hasher.take();
                let mut cs = summer.take();
                let (data, sum, md5, fh, cs) = blocking(move || {
                    let mut v = vec![0u8; len];
                    read_mapped(&f.file, f.extents.as_ref(), &mut v, off)?;
                    if let Some(h) = fh.as_mut() {
                        h.update(&v);
                    }
                    let crc = cs.as_mut().map(|c| c.update_crc(&v));
                    let sum = match crc {
                        Some(crc) => Checksum::of_crc32c_or(algo, crc, &v),
                        None => Checksum::of(algo, &v),
                    };
                    let md5 = want_md5.then(|| content_md5(&v));
                    Ok((Bytes::from(v), sum, md5, fh, cs))
                })
                .await?;
                full_hasher = fh;
                summer = cs;
                super::UPLOAD_BW.take(len as u64).await;
                let number = i as i32 + 1;
                let b = self
                    .client
                    .upload_part()
                    .bucket(&self.cfg.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(len as i64)
                    .body(ByteStream::from(data))
                    .checksum_algorithm(sdk_algo(algo))
                    .set_content_md5(md5);
                let b = with_checksum!(b, algo, sum.base64());
                let what = format!("UploadPart {full} #{number}");
                let b = b.customize().config_override(self.upload_config());
                let b = if self.sign_payload {
                    b
                } else {
                    b.disable_payload_signing()
                };
                tasks.spawn(async move {
                    let _permit = permit;
                    let out = b.send().await.map_err(|e| map_err(&what, e))?;
                    let etag = out.e_tag().map(str::to_string).ok_or_else(|| {
                        StoreError::new(StoreErrorKind::Other, format!("{what}: no ETag"))
                    })?;
                    Ok((number, etag, sum))
                });
            }
            while let Some(r) = tasks.join_next().await {
                done.push(joined(r)?);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            return Err(e);
        }
        done.sort_by_key(|p| p.0);
        let checksum = match full_hasher {
            Some(h) => h.finalize(),
            None => {
                let mut acc: Option<Checksum> = None;
                for (i, (_, _, sum)) in done.iter().enumerate() {
                    let len = part_size.min(size - i as u64 * part_size);
                    acc = Some(match acc {
                        None => sum.clone(),
                        Some(a) => combine_crc(&a, sum, len).expect("crc algorithms combine"),
                    });
                }
                acc.unwrap_or_else(|| Checksum::of(algo, &[]))
            }
        };
        Ok((checksum, done, summer.and_then(|s| s.finish())))
    }

    async fn get_object(
        &self,
        full: &str,
        version_id: Option<&str>,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<s3::operation::get_object::GetObjectOutput, StoreError> {
        let mut b = self
            .client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(full)
            .set_version_id(version_id.map(str::to_string))
            .set_if_match(if_match.map(str::to_string));
        if let Some((start, end)) = range {
            b = b.range(format!("bytes={start}-{end}"));
        }
        b.send()
            .await
            .map_err(|e| map_err(&format!("GET {full}"), e))
    }

    /// One ranged GET of bytes `[start, start + len)` of an object of `size` bytes, into
    /// `dest` at `start - base`, hashed by itself.
    #[allow(clippy::too_many_arguments)]
    async fn get_range(
        &self,
        full: &str,
        key: &str,
        version_id: Option<&str>,
        dest: Option<Arc<Dest>>,
        size: u64,
        (start, len, base): (u64, u64, u64),
        algo: ChecksumAlgo,
        progress: Option<&tokio::sync::watch::Sender<u64>>,
    ) -> Result<GetResult, StoreError> {
        if base > start {
            return Err(StoreError::invalid_argument(format!(
                "{key}: range {start}+{len} outside an object of {size} bytes"
            )));
        }
        let (body, v) = self
            .range_body(full, key, version_id, size, (start, len))
            .await?;
        let sum = stream_to_file(
            body,
            dest,
            start - base,
            len,
            Some(algo),
            full,
            Some(self.stall),
            progress,
        )
        .await?;
        Ok(GetResult {
            bytes: len,
            checksum: sum.expect("hashed"),
            version_id: v.or(version_id.map(str::to_string)),
        })
    }

    /// The answer to a ranged GET of bytes `[start, start + len)` of an object of `size`
    /// bytes: its body (of that length, checked) and its version id.
    async fn range_body(
        &self,
        full: &str,
        key: &str,
        version_id: Option<&str>,
        size: u64,
        (start, len): (u64, u64),
    ) -> Result<(ByteStream, Option<String>), StoreError> {
        if len == 0 || start + len > size {
            return Err(StoreError::invalid_argument(format!(
                "{key}: range {start}+{len} outside an object of {size} bytes"
            )));
        }
        let lean = match &self.lean {
            Some(l) => l.get_range(full, version_id, (start, len), size).await,
            None => None,
        };
        let (body, v) = match lean {
            Some(o) => (o.body, o.version_id),
            None => {
                let out = self
                    .get_object(full, version_id, Some((start, start + len - 1)), None)
                    .await?;
                let total = out
                    .content_range()
                    .and_then(|r| r.rsplit_once('/'))
                    .and_then(|(_, t)| t.parse::<u64>().ok());
                if total != Some(size) || out.content_length() != Some(len as i64) {
                    return Err(size_mismatch(key, total.unwrap_or(0), size));
                }
                let v = version(out.version_id());
                (out.body, v)
            }
        };
        Ok((body, v))
    }

    async fn get_impl(&self, req: GetRequest<'_>) -> Result<GetResult, StoreError> {
        validate_key(req.key)?;
        let full = self.full_key(req.key);
        let algo = req.checksum;
        let size = req.expected_size;
        let dest = req
            .dest
            .map(|f| {
                f.try_clone().map(|file| {
                    Arc::new(Dest {
                        file,
                        extents: req.extents.filter(|_| req.range.is_none()).cloned(),
                    })
                })
            })
            .transpose()
            .map_err(|e| StoreError::io("dup of the destination", &e))?;
        if let Some((start, len)) = req.range {
            return self
                .get_range(
                    &full,
                    req.key,
                    req.version_id,
                    dest,
                    size,
                    (start, len, req.dest_base),
                    algo,
                    req.progress,
                )
                .await;
        }
        let chunk = self.cfg.part_size;
        let crc = algo.is_crc();
        let stall = self.stall;
        // Ranges arrive out of order: their CRCs combine, other hashes need the bytes in
        // order, which without a destination to read them back from means one stream.
        if size <= chunk || self.cfg.concurrency == 1 || (dest.is_none() && !crc) {
            let lean = match (&self.lean, size <= chunk) {
                (Some(l), true) => l.get(&full, req.version_id, size).await,
                _ => None,
            };
            let (body, version_id, stall) = match lean {
                Some(o) => (o.body, o.version_id, Some(self.stall)),
                None => {
                    let out = self.get_object(&full, req.version_id, None, None).await?;
                    let len = out.content_length().unwrap_or(-1);
                    if len != size as i64 {
                        return Err(size_mismatch(req.key, len.max(0) as u64, size));
                    }
                    let v = version(out.version_id());
                    (out.body, v, Some(self.stall))
                }
            };
            let sum = stream_to_file(body, dest, 0, size, Some(algo), &full, stall, None).await?;
            return Ok(GetResult {
                bytes: size,
                checksum: sum.expect("hashed"),
                version_id,
            });
        }
        // Ranged: the first range tells the total size and pins the version (its id, or
        // on an unversioned bucket its ETag via If-Match) for the others. Each range holds
        // a permit of this object's and one of the store's, taken in that order.
        let sem = Arc::new(Semaphore::new(
            self.cfg.concurrency.max(1) * DOWNLOAD_RANGES_PER_OBJECT,
        ));
        let permits = || {
            let (one, all) = (sem.clone(), self.download_ranges.clone());
            async move {
                let p = one.acquire_owned().await.expect("open semaphore");
                (p, all.acquire_owned().await.expect("open semaphore"))
            }
        };
        let first_permits = permits().await;
        let first = self
            .get_object(&full, req.version_id, Some((0, chunk - 1)), None)
            .await?;
        let total = first
            .content_range()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, t)| t.parse::<u64>().ok());
        if total != Some(size) {
            return Err(size_mismatch(req.key, total.unwrap_or(0), size));
        }
        let version_id = version(first.version_id()).or(req.version_id.map(str::to_string));
        let etag = first.e_tag().map(str::to_string);
        let nranges = size.div_ceil(chunk);
        let mut tasks: JoinSet<Result<(u64, Option<Checksum>), StoreError>> = JoinSet::new();
        {
            let (d, f) = (dest.clone(), full.clone());
            let body = first.body;
            tasks.spawn(async move {
                let _p = first_permits;
                let s = stream_to_file(
                    body,
                    d,
                    0,
                    chunk,
                    crc.then_some(algo),
                    &f,
                    Some(stall),
                    None,
                )
                .await?;
                Ok((0, s))
            });
        }
        let mut sums: Vec<(u64, Option<Checksum>)> = Vec::with_capacity(nranges as usize);
        let result: Result<(), StoreError> = async {
            for i in 1..nranges {
                let permit = permits().await;
                while let Some(r) = tasks.try_join_next() {
                    sums.push(joined(r)?);
                }
                let start = i * chunk;
                let end = (start + chunk).min(size) - 1;
                let (d, f, this) = (dest.clone(), full.clone(), self.clone());
                let (v, e) = (version_id.clone(), etag.clone());
                tasks.spawn(async move {
                    let _p = permit;
                    let if_match = if v.is_none() { e.as_deref() } else { None };
                    let out = this
                        .get_object(&f, v.as_deref(), Some((start, end)), if_match)
                        .await?;
                    let len = end - start + 1;
                    let s = stream_to_file(
                        out.body,
                        d,
                        start,
                        len,
                        crc.then_some(algo),
                        &f,
                        Some(stall),
                        None,
                    )
                    .await?;
                    Ok((i, s))
                });
            }
            Ok(())
        }
        .await;
        let mut err = result.err();
        while let Some(r) = tasks.join_next().await {
            match joined(r) {
                Ok(s) => sums.push(s),
                Err(e) => {
                    if err.is_none() {
                        err = Some(e);
                        tasks.abort_all();
                    }
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        let checksum = if crc {
            sums.sort_by_key(|s| s.0);
            let mut acc: Option<Checksum> = None;
            for (i, s) in sums {
                let s = s.expect("crc ranges hashed");
                let len = chunk.min(size - i * chunk);
                acc = Some(match acc {
                    None => s,
                    Some(a) => combine_crc(&a, &s, len).expect("crc algorithms combine"),
                });
            }
            acc.expect("at least two ranges")
        } else {
            let Some(d) = dest else {
                return Err(StoreError::new(
                    StoreErrorKind::Other,
                    "a ranged download without a destination needs a CRC",
                ));
            };
            blocking(move || checksum_mapped(&d.file, d.extents.as_ref(), size, algo)).await?
        };
        Ok(GetResult {
            bytes: size,
            checksum,
            version_id,
        })
    }

    async fn head_impl(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let full = self.full_key(key);
        let out = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(&full)
            .set_version_id(version_id.map(str::to_string))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| map_err(&format!("HEAD {full}"), e))?;
        let storage_class = out
            .storage_class()
            .map(|c| StorageClass::from_reported(c.as_str()))
            .unwrap_or_default();
        let checksum = [
            ChecksumAlgo::Crc32c,
            ChecksumAlgo::Crc32,
            ChecksumAlgo::Sha256,
            ChecksumAlgo::Sha1,
        ]
        .into_iter()
        .find_map(|a| checksum_of!(out, a).map(|v| ReportedChecksum::parse(a, v)));
        let archived = storage_class.is_archive() || out.archive_status().is_some();
        Ok(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            restore: restore_status(archived, out.restore()),
            storage_class,
            version_id: version(out.version_id()),
            etag: out.e_tag().map(str::to_string),
            checksum,
            metadata: decode_metadata(out.metadata()),
        })
    }
}

/// The restore state from whether the object is archived and its `x-amz-restore` header:
/// `ongoing-request="true"` while in progress; `ongoing-request="false", expiry-date="..."`
/// once restored.
pub fn restore_status(archived: bool, header: Option<&str>) -> RestoreStatus {
    match header {
        Some(h) if h.contains("ongoing-request=\"true\"") => RestoreStatus::InProgress,
        Some(h) if h.contains("ongoing-request=\"false\"") => RestoreStatus::Restored {
            expiry: h
                .split_once("expiry-date=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(d, _)| d.to_string()),
        },
        _ if archived => RestoreStatus::Archived,
        _ => RestoreStatus::NotArchived,
    }
}

/// A version id from a response; "null" (an unversioned bucket's objects, as moto says it
/// on CompleteMultipartUpload) is no version.
fn version(v: Option<&str>) -> Option<String> {
    v.filter(|v| *v != "null").map(str::to_string)
}

fn joined<T>(r: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, StoreError> {
    match r {
        Ok(r) => r,
        Err(e) => Err(StoreError::new(
            StoreErrorKind::Other,
            format!("transfer task failed: {e}"),
        )),
    }
}

/// Streams `len` bytes of `body` into `dest` at `start` with pwrite, in chunks of
/// `WRITE_CHUNK` (`PROGRESS_CHUNK` with `progress`; one write in flight while the next
/// chunk arrives), hashing them if asked
/// (without `dest`, only hashing them). `stall`: the longest wait for the next bytes (the
/// SDK's bodies have their own stalled-stream protection; the lean GET's do not).
/// `progress` is told the end of what is written, write by write (`GetRequest::progress`).
#[allow(clippy::too_many_arguments)]
async fn stream_to_file(
    body: ByteStream,
    dest: Option<Arc<Dest>>,
    start: u64,
    len: u64,
    algo: Option<ChecksumAlgo>,
    what: &str,
    stall: Option<Duration>,
    progress: Option<&tokio::sync::watch::Sender<u64>>,
) -> Result<Option<Checksum>, StoreError> {
    let mut hasher = algo.map(Hasher::new);
    // The end of the bytes written so far (of the write last joined), told to `progress`.
    let mut pending_end = start;
    let tell = |to: u64| {
        if let (Some(p), true) = (progress, dest.is_some()) {
            p.send_replace(to);
        }
    };
    let chunk = if progress.is_some() {
        PROGRESS_CHUNK
    } else {
        WRITE_CHUNK
    };
    // The body's chunks as the HTTP client gave them (no copy), written together with one
    // pwritev once `chunk` bytes have gathered.
    let mut buf: Vec<Bytes> = Vec::new();
    let mut buffered = 0usize;
    let mut off = start;
    let mut body = BodyReader::new(body, len, what, stall);
    let mut pending: Option<tokio::task::JoinHandle<Result<Option<Hasher>, StoreError>>> = None;
    loop {
        let end = match body.next().await? {
            None => true,
            Some(bytes) => {
                buffered += bytes.len();
                buf.push(bytes);
                false
            }
        };
        if buffered >= chunk || (end && buffered > 0) {
            if let Some(p) = pending.take() {
                hasher = joined(p.await)?;
                tell(pending_end);
            }
            let data = std::mem::take(&mut buf);
            let d = dest.clone();
            let at = off;
            let mut h = hasher.take();
            off += buffered as u64;
            buffered = 0;
            let write = move || {
                if let Some(d) = &d {
                    d.write_parts_at(&data, at)?;
                }
                if let Some(h) = h.as_mut() {
                    for p in &data {
                        h.update(p);
                    }
                }
                Ok(h)
            };
            // The whole range in one buffer (a small object) has nothing to overlap its
            // write with: written in place, which on a blocking thread (a recall's) saves
            // a hop to another thread; a runtime worker hands its work to another first.
            if end && at == start && multi_thread() {
                hasher = tokio::task::block_in_place(write)?;
            } else {
                pending = Some(tokio::task::spawn_blocking(write));
                pending_end = off;
            }
        }
        if end {
            break;
        }
    }
    if let Some(p) = pending.take() {
        hasher = joined(p.await)?;
    }
    body.finish()?;
    tell(off);
    Ok(hasher.map(Hasher::finalize))
}

/// A GET's body of `len` bytes, read chunk by chunk as the HTTP client gives them: at most
/// `stall` to wait for the next, never more than `len` bytes, each chunk after its share of
/// the download bandwidth; [`BodyReader::finish`] checks that all `len` came.
struct BodyReader<'a> {
    body: ByteStream,
    got: u64,
    len: u64,
    what: &'a str,
    stall: Option<Duration>,
}

impl<'a> BodyReader<'a> {
    fn new(body: ByteStream, len: u64, what: &'a str, stall: Option<Duration>) -> Self {
        BodyReader {
            body,
            got: 0,
            len,
            what,
            stall,
        }
    }

    /// The next chunk: None at the body's end.
    async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        let what = self.what;
        let next = match self.stall {
            None => self.body.next().await,
            Some(d) => tokio::time::timeout(d, self.body.next())
                .await
                .map_err(|_| {
                    StoreError::new(
                        StoreErrorKind::Unreachable,
                        format!("GET {what}: no data for {} s", d.as_secs()),
                    )
                })?,
        };
        let bytes = match next {
            None => return Ok(None),
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                return Err(StoreError::new(
                    StoreErrorKind::Unreachable,
                    format!("GET {what}: reading the body: {}", error_chain(&e)),
                ))
            }
        };
        self.got += bytes.len() as u64;
        if self.got > self.len {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                format!("GET {what}: more bytes than the {} asked for", self.len),
            ));
        }
        super::DOWNLOAD_BW.take(bytes.len() as u64).await;
        Ok(Some(bytes))
    }

    /// After the end: all `len` bytes came.
    fn finish(&self) -> Result<(), StoreError> {
        if self.got != self.len {
            return Err(StoreError::new(
                StoreErrorKind::Unreachable,
                format!(
                    "GET {}: body ended after {} of {} bytes",
                    self.what, self.got, self.len
                ),
            ));
        }
        Ok(())
    }
}

/// Hands the `len` bytes of `body` to `sink` in order, as the HTTP client gave them.
async fn stream_to_sink(
    body: ByteStream,
    len: u64,
    what: &str,
    stall: Duration,
    sink: &(dyn Fn(Bytes) + Send + Sync),
) -> Result<(), StoreError> {
    let mut body = BodyReader::new(body, len, what, Some(stall));
    while let Some(bytes) = body.next().await? {
        if !bytes.is_empty() {
            sink(bytes);
        }
    }
    body.finish()
}

/// Whether the current runtime is multi-threaded (`block_in_place` panics on any other).
fn multi_thread() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Bytes kept as they are in metadata values; everything else (and `%`) is
/// percent-encoded, so any UTF-8 value survives HTTP headers and comes back the same.
fn keep_in_header(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'%'
}

fn percent_encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode_metadata(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), percent_encode(v, keep_in_header)))
        .collect()
}

fn decode_metadata(m: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), percent_decode(v)))
            .collect()
    })
    .unwrap_or_default()
}

/// The `x-amz-tagging` header: a URL query string.
fn encode_tagging(tags: &BTreeMap<String, String>) -> String {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-_.~".contains(&b);
    tags.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encode(k, unreserved),
                percent_encode(v, unreserved)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Maps an SDK error to a `StoreError`: what failed (`what`), the S3 error code and HTTP
/// status, or the transport failure.
fn map_err<E>(what: &str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use StoreErrorKind as K;
    let detail = match &e {
        SdkError::ServiceError(s) => format!(
            "HTTP {}{}",
            s.raw().status().as_u16(),
            s.err()
                .message()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        other => error_chain(other),
    };
    let (kind, transient) = match &e {
        SdkError::ConstructionFailure(_) => (K::InvalidConfig, false),
        SdkError::TimeoutError(_) => (K::Unreachable, true),
        SdkError::DispatchFailure(d) => {
            if d.is_io() || d.is_timeout() {
                (K::Unreachable, true)
            } else if d.is_user() {
                (K::InvalidConfig, false)
            } else {
                (K::Other, true)
            }
        }
        SdkError::ResponseError(_) => (K::Other, true),
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            classify(status, s.err().code())
        }
        _ => (K::Other, true),
    };
    let code = e.code().map(|c| format!(" [{c}]")).unwrap_or_default();
    StoreError {
        kind,
        transient,
        message: format!("{what}:{code} {detail}"),
        errno: None,
    }
}

/// Whether the server answered that it does not implement the call (501 NotImplemented:
/// s3s-fs for ListObjectVersions and ListMultipartUploads).
fn not_implemented<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::ServiceError(s) => {
            s.raw().status().as_u16() == 501 || s.err().code() == Some("NotImplemented")
        }
        _ => false,
    }
}

/// An error and its sources, "outer: inner: innermost".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// The kind and transience of an S3 error answer.
fn classify(status: u16, code: Option<&str>) -> (StoreErrorKind, bool) {
    use StoreErrorKind as K;
    match code {
        Some("NoSuchKey" | "NoSuchVersion" | "NotFound") => return (K::NotFound, false),
        Some("InvalidObjectState" | "ObjectNotInActiveTierError") => {
            return (K::InvalidObjectState, false)
        }
        Some(
            "NoSuchBucket"
            | "PermanentRedirect"
            | "AuthorizationHeaderMalformed"
            | "InvalidStorageClass"
            | "InvalidBucketName"
            | "NotImplemented"
            | "KMS.NotFoundException"
            | "InvalidEncryptionAlgorithmError",
        ) => return (K::InvalidConfig, false),
        Some(
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AllAccessDisabled"
            | "AccountProblem"
            | "InvalidSecurity",
        ) => return (K::AccessDenied, false),
        Some("ExpiredToken" | "TokenRefreshRequired" | "RequestTimeTooSkewed") => {
            return (K::AccessDenied, true)
        }
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TooManyRequests"
            | "ServiceUnavailable"
            | "Busy",
        ) => return (K::Throttled, true),
        Some(
            "BadDigest"
            | "InvalidDigest"
            | "XAmzContentChecksumMismatch"
            | "XAmzContentSHA256Mismatch"
            | "InvalidChecksum",
        ) => return (K::ChecksumMismatch, true),
        Some("InternalError" | "RequestTimeout" | "OperationAborted") => return (K::Other, true),
        Some(
            "InvalidArgument" | "KeyTooLongError" | "MetadataTooLarge" | "InvalidTag"
            | "MalformedXML" | "EntityTooLarge" | "EntityTooSmall" | "InvalidPart"
            | "InvalidPartOrder",
        ) => return (K::InvalidArgument, false),
        _ => {}
    }
    match status {
        404 => (K::NotFound, false),
        401 | 403 => (K::AccessDenied, false),
        429 | 503 => (K::Throttled, true),
        400 | 411 | 413 | 416 => (K::InvalidArgument, false),
        301 | 307 => (K::InvalidConfig, false),
        501 => (K::InvalidConfig, false),
        s if s >= 500 => (K::Other, true),
        412 | 409 => (K::Other, true),
        _ => (K::Other, false),
    }
}

impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        let at = self
            .cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS {}", self.cfg.region));
        if self.cfg.prefix.is_empty() {
            format!("s3://{} at {at}", self.cfg.bucket)
        } else {
            format!("s3://{}/{} at {at}", self.cfg.bucket, self.cfg.prefix)
        }
    }

    fn put(&self, req: PutRequest) -> StoreFuture<'_, PutResult> {
        Box::pin(async move {
            validate_key(&req.key)?;
            validate_metadata(&req.metadata)?;
            validate_tags(&req.tags)?;
            let full = self.full_key(&req.key);
            let algo = req.checksum.unwrap_or(self.cfg.checksum);
            let class = req
                .storage_class
                .clone()
                .unwrap_or_else(|| self.cfg.storage_class.clone());
            if matches!(req.body, PutBody::Memory(_)) {
                // Already in memory (a pack): one PUT, whatever its size (never above 5 GiB:
                // packs are at most a part).
                self.put_single(req, full, algo, class).await
            } else if self.one_streamed_put(req.size) {
                self.put_streamed(req, full, algo, class).await
            } else if req.size > self.cfg.part_size {
                self.put_multipart(req, full, algo, class).await
            } else {
                self.put_single(req, full, algo, class).await
            }
        })
    }

    fn head<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreFuture<'a, ObjectMeta> {
        Box::pin(self.head_impl(key, version_id))
    }

    fn get<'a>(&'a self, req: GetRequest<'a>) -> StoreFuture<'a, GetResult> {
        Box::pin(self.get_impl(req))
    }

    fn get_range_chunks<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        size: u64,
        range: (u64, u64),
        sink: &'a (dyn Fn(Bytes) + Send + Sync),
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            validate_key(key)?;
            let full = self.full_key(key);
            let (body, _) = self.range_body(&full, key, version_id, size, range).await?;
            stream_to_sink(body, range.1, &full, self.stall, sink).await
        })
    }

    fn restore<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        days: u32,
        tier: RestoreTier,
    ) -> StoreFuture<'a, RestoreOutcome> {
        Box::pin(async move {
            // HEAD first: S3 answers a repeated restore of a restored object with 200 and
            // the SDK does not show the status; moto never says RestoreAlreadyInProgress.
            match self.head_impl(key, version_id).await?.restore {
                RestoreStatus::NotArchived => return Ok(RestoreOutcome::NotArchived),
                RestoreStatus::InProgress => return Ok(RestoreOutcome::AlreadyInProgress),
                RestoreStatus::Restored { .. } => return Ok(RestoreOutcome::AlreadyRestored),
                RestoreStatus::Archived => {}
            }
            let full = self.full_key(key);
            let tier = match tier {
                RestoreTier::Expedited => Tier::Expedited,
                RestoreTier::Standard => Tier::Standard,
                RestoreTier::Bulk => Tier::Bulk,
            };
            let params = GlacierJobParameters::builder()
                .tier(tier)
                .build()
                .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("restore: {e}")))?;
            let r = self
                .client
                .restore_object()
                .bucket(&self.cfg.bucket)
                .key(&full)
                .set_version_id(version_id.map(str::to_string))
                .restore_request(
                    RestoreRequest::builder()
                        .days(days.min(i32::MAX as u32) as i32)
                        .glacier_job_parameters(params)
                        .build(),
                )
                .send()
                .await;
            match r {
                Ok(_) => Ok(RestoreOutcome::Started),
                Err(e) if e.code() == Some("RestoreAlreadyInProgress") => {
                    Ok(RestoreOutcome::AlreadyInProgress)
                }
                Err(e) => Err(map_err(&format!("RestoreObject {full}"), e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str, version_id: Option<&'a str>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            validate_key(key)?;
            let full = self.full_key(key);
            let r = self
                .client
                .delete_object()
                .bucket(&self.cfg.bucket)
                .key(&full)
                .set_version_id(version_id.map(str::to_string))
                .send()
                .await;
            match r {
                Ok(_) => Ok(()),
                Err(e) => {
                    let err = map_err(&format!("DELETE {full}"), e);
                    if err.kind == StoreErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(err)
                    }
                }
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<ListEntry>> {
        Box::pin(async move {
            validate_prefix(prefix)?;
            let full = if self.cfg.prefix.is_empty() {
                prefix.to_string()
            } else {
                format!("{}/{prefix}", self.cfg.prefix)
            };
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.cfg.bucket)
                    .prefix(&full)
                    .max_keys(self.cfg.list_page_size)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| map_err(&format!("LIST {full}"), e))?;
                for o in page.contents() {
                    let Some(k) = o.key().and_then(|k| self.strip_prefix(k)) else {
                        continue;
                    };
                    out.push(ListEntry {
                        key: k.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        etag: o.e_tag().map(str::to_string),
                        storage_class: o
                            .storage_class()
                            .map(|c| StorageClass::from_reported(c.as_str()))
                            .unwrap_or_default(),
                    });
                }
                match (page.is_truncated(), page.next_continuation_token()) {
                    (Some(true), Some(t)) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn get_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
    ) -> StoreFuture<'a, BTreeMap<String, String>> {
        Box::pin(async move {
            validate_key(key)?;
            let full = self.full_key(key);
            let out = self
                .client
                .get_object_tagging()
                .bucket(&self.cfg.bucket)
                .key(&full)
                .set_version_id(version_id.map(str::to_string))
                .send()
                .await
                .map_err(|e| map_err(&format!("GetObjectTagging {full}"), e))?;
            Ok(out
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect())
        })
    }

    fn set_tags<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        tags: BTreeMap<String, String>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            validate_key(key)?;
            validate_tags(&tags)?;
            let full = self.full_key(key);
            if tags.is_empty() {
                self.client
                    .delete_object_tagging()
                    .bucket(&self.cfg.bucket)
                    .key(&full)
                    .set_version_id(version_id.map(str::to_string))
                    .send()
                    .await
                    .map_err(|e| map_err(&format!("DeleteObjectTagging {full}"), e))?;
                return Ok(());
            }
            let set = tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::invalid_argument(format!("tags: {e}")))?;
            let tagging = Tagging::builder()
                .set_tag_set(Some(set))
                .build()
                .map_err(|e| StoreError::invalid_argument(format!("tags: {e}")))?;
            self.client
                .put_object_tagging()
                .bucket(&self.cfg.bucket)
                .key(&full)
                .set_version_id(version_id.map(str::to_string))
                .tagging(tagging)
                .send()
                .await
                .map_err(|e| map_err(&format!("PutObjectTagging {full}"), e))?;
            Ok(())
        })
    }

    fn purge<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            validate_key(key)?;
            let full = self.full_key(key);
            // Every version and delete marker of exactly this key.
            let mut versions: Vec<Option<String>> = Vec::new();
            let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
            for _ in 0..100 {
                let listed = self
                    .client
                    .list_object_versions()
                    .bucket(&self.cfg.bucket)
                    .prefix(&full)
                    .set_key_marker(key_marker.clone())
                    .set_version_id_marker(version_marker.clone())
                    .send()
                    .await;
                let out = match listed {
                    Ok(out) => out,
                    // A server without versions (s3s-fs): the key has one object, which a
                    // plain DELETE removes; it cannot list uploads either.
                    Err(e) if not_implemented(&e) => return self.delete(key, None).await,
                    Err(e) => return Err(map_err(&format!("ListObjectVersions {full}"), e)),
                };
                versions.extend(
                    out.versions()
                        .iter()
                        .filter(|v| v.key() == Some(full.as_str()))
                        .map(|v| v.version_id().map(str::to_string)),
                );
                versions.extend(
                    out.delete_markers()
                        .iter()
                        .filter(|v| v.key() == Some(full.as_str()))
                        .map(|v| v.version_id().map(str::to_string)),
                );
                if out.is_truncated() != Some(true) {
                    break;
                }
                key_marker = out.next_key_marker().map(str::to_string);
                version_marker = out.next_version_id_marker().map(str::to_string);
            }
            for v in &versions {
                let v = v.as_deref().filter(|v| *v != "null");
                self.delete(key, v).await?;
            }
            // Multipart uploads of this key that were never completed (a crash mid-upload).
            let out = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.cfg.bucket)
                .prefix(&full)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if not_implemented(&e) => return Ok(()),
                Err(e) => return Err(map_err(&format!("ListMultipartUploads {full}"), e)),
            };
            for u in out
                .uploads()
                .iter()
                .filter(|u| u.key() == Some(full.as_str()))
            {
                if let Some(id) = u.upload_id() {
                    self.abort(&full, id).await;
                }
            }
            Ok(())
        })
    }

    fn copy_source(&self) -> Option<crate::store::CopySource> {
        Some(crate::store::CopySource {
            endpoint: self.cfg.endpoint.clone(),
            region: self.cfg.region.clone(),
            bucket: self.cfg.bucket.clone(),
            prefix: self.cfg.prefix.clone(),
        })
    }

    fn copy_from<'a>(
        &'a self,
        from: &'a crate::store::CopySource,
        key: &'a str,
        version_id: Option<&'a str>,
        size: u64,
        algo: ChecksumAlgo,
    ) -> Option<StoreFuture<'a, crate::store::CopyResult>> {
        // One CopyObject copies at most 5 GiB; larger objects would need UploadPartCopy.
        if from.endpoint != self.cfg.endpoint || from.region != self.cfg.region || size > 5 << 30 {
            return None;
        }
        Some(Box::pin(async move {
            validate_key(key)?;
            let full = self.full_key(key);
            let src_full = if from.prefix.is_empty() {
                key.to_string()
            } else {
                format!("{}/{key}", from.prefix)
            };
            let out = self
                .copy_object_onto(
                    copy_source(&from.bucket, &src_full, version_id),
                    &full,
                    self.cfg.storage_class.as_str(),
                    // The source's state tags are the primary's, not the copy's.
                    s3::types::TaggingDirective::Replace,
                    algo,
                )
                .await
                .map_err(|e| map_err(&format!("CopyObject {src_full} to {full}"), e))?;
            let version_id = version(out.version_id());
            let mut reported = out
                .copy_object_result()
                .and_then(|r| checksum_of!(r, algo))
                .map(|v| ReportedChecksum::parse(algo, v));
            if reported.is_none() {
                // Not in the answer (s3s-fs): what the server says the copy has, one HEAD
                // instead of a read-back of every byte.
                reported = self
                    .head_impl(key, version_id.as_deref())
                    .await
                    .ok()
                    .and_then(|m| m.checksum)
                    .filter(|r| r.algo == algo);
            }
            Ok(crate::store::CopyResult {
                version_id,
                reported,
            })
        }))
    }

    fn set_storage_class<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        class: StorageClass,
    ) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            validate_key(key)?;
            let full = self.full_key(key);
            let out = self
                .copy_object_onto(
                    copy_source(&self.cfg.bucket, &full, version_id),
                    &full,
                    class.as_str(),
                    s3::types::TaggingDirective::Copy,
                    self.cfg.checksum,
                )
                .await
                .map_err(|e| map_err(&format!("CopyObject {full} (to {class})"), e))?;
            let new = version(out.version_id());
            match (&new, version_id) {
                // Versioned: the copy is a new version; the old one goes.
                (Some(n), Some(old)) if n != old => {
                    self.delete(key, Some(old)).await?;
                    Ok(new)
                }
                (Some(_), _) => Ok(new),
                (None, v) => Ok(v.map(str::to_string)),
            }
        })
    }

    fn validates_checksums<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            validate_key(key)?;
            let full = self.full_key(key);
            let body = b"coldtier checksum probe: this body does not match its checksum\n";
            let algo = self.cfg.checksum;
            // The checksum (and, where we send one, the Content-MD5) of other bytes.
            let wrong = Checksum::of(algo, b"something else");
            let b = self
                .client
                .put_object()
                .bucket(&self.cfg.bucket)
                .key(&full)
                .content_length(body.len() as i64)
                .body(ByteStream::from_static(body))
                .checksum_algorithm(sdk_algo(algo))
                .set_content_md5(self.cfg.content_md5.then(|| content_md5(b"something else")));
            let b = with_checksum!(b, algo, wrong.base64());
            let b = with_object_settings!(
                b,
                self,
                StorageClass::Standard,
                HashMap::new(),
                BTreeMap::<String, String>::new()
            );
            match b.send().await {
                Ok(out) => {
                    // Stored unchecked: remove it again (that exact version).
                    let v = version(out.version_id());
                    self.delete(key, v.as_deref()).await?;
                    Ok(false)
                }
                Err(e) => {
                    let err = map_err(&format!("PUT {full} (checksum probe)"), e);
                    match err.kind {
                        // Refused for its checksum (or as a bad request, while the same
                        // PUT with a matching checksum was accepted): it checks.
                        StoreErrorKind::ChecksumMismatch | StoreErrorKind::InvalidArgument => {
                            self.learned.validates.store(true, Ordering::Relaxed);
                            // s3s-fs refuses the body and keeps it all the same: the probe
                            // leaves nothing behind either way.
                            match self.head_impl(key, None).await {
                                Ok(m) => self.delete(key, m.version_id.as_deref()).await?,
                                Err(e) if e.kind == StoreErrorKind::NotFound => {}
                                Err(e) => return Err(e),
                            }
                            Ok(true)
                        }
                        _ => Err(err),
                    }
                }
            }
        })
    }

    fn multipart_proven<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            validate_key(key)?;
            let body = b"coldtier multipart probe: one part\n";
            let put = self
                .put_multipart(
                    probe_request(key, body)?,
                    self.full_key(key),
                    self.cfg.checksum,
                    StorageClass::Standard,
                )
                .await?;
            let proven = put.reported.as_ref().is_some_and(|r| put.proven_by(r));
            self.delete(key, put.version_id.as_deref()).await?;
            self.learned
                .multipart_unproven
                .store(!proven, Ordering::Relaxed);
            Ok(proven)
        })
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn metadata_values_round_trip_through_header_encoding() {
        for v in [
            "plain",
            "a b",
            "100%",
            "dir/é ü/\u{1F600}",
            "",
            " lead",
            "%41",
        ] {
            let e = percent_encode(v, keep_in_header);
            assert!(e.bytes().all(keep_in_header_or_pct), "{e}");
            assert_eq!(percent_decode(&e), v);
        }
        fn keep_in_header_or_pct(b: u8) -> bool {
            keep_in_header(b) || b == b'%'
        }
    }

    #[test]
    fn tagging_header_is_a_query_string() {
        let t = BTreeMap::from([
            ("state".to_string(), "premigrated".to_string()),
            ("a b".to_string(), "x=y/z".to_string()),
        ]);
        assert_eq!(encode_tagging(&t), "a%20b=x%3Dy%2Fz&state=premigrated");
    }

    #[test]
    fn restore_header_forms() {
        assert_eq!(restore_status(true, None), RestoreStatus::Archived);
        assert_eq!(restore_status(false, None), RestoreStatus::NotArchived);
        assert_eq!(
            restore_status(true, Some("ongoing-request=\"true\"")),
            RestoreStatus::InProgress
        );
        assert_eq!(
            restore_status(
                true,
                Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"")
            ),
            RestoreStatus::Restored {
                expiry: Some("Fri, 21 Dec 2012 00:00:00 GMT".into())
            }
        );
    }

    #[test]
    fn error_codes_map_to_kinds() {
        use StoreErrorKind as K;
        assert_eq!(classify(404, None), (K::NotFound, false));
        assert_eq!(
            classify(404, Some("NoSuchBucket")),
            (K::InvalidConfig, false)
        );
        assert_eq!(
            classify(403, Some("InvalidObjectState")),
            (K::InvalidObjectState, false)
        );
        assert_eq!(classify(403, None), (K::AccessDenied, false));
        assert_eq!(classify(503, Some("SlowDown")), (K::Throttled, true));
        assert_eq!(
            classify(400, Some("BadDigest")),
            (K::ChecksumMismatch, true)
        );
        assert_eq!(classify(500, None), (K::Other, true));
        assert_eq!(
            classify(501, Some("NotImplemented")),
            (K::InvalidConfig, false)
        );
    }
}
