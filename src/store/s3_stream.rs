//! One PUT of a large object, streamed from its file: for a store whose single PUTs are
//! proven by its checksum answer (it refuses a body that does not match) while its
//! multipart answers prove nothing (s3s-fs: no checksum for a multipart object, so every
//! multipart copy would be read back, twice the transfer). Objects up to 5 GiB, S3's
//! limit for one PUT, then go in one request whose answer proves them.
//!
//! Two passes over the file: the first hashes it (the object's checksum, the SigV4
//! payload SHA-256, Content-MD5 where asked, the chunk sums) in bounded memory; the second
//! streams it as the body, read ahead one chunk at a time. A file that changes between
//! the passes is refused by the server (the checksum and the signed payload hash no longer
//! match the body) and the copy fails; nothing is stubbed on a failed copy.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_runtime::auth::PayloadSigningOverride;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use super::chunks::{ChunkSummer, ChunkSums};
use super::{read_mapped, Checksum, ChecksumAlgo, Dest, Hasher, StoreError, StoreErrorKind};

/// Bytes per read of either pass: the memory a streamed PUT holds (two of them in flight
/// in the second pass).
const CHUNK: usize = 4 << 20;

/// What the first pass found.
pub(super) struct Hashed {
    pub checksum: Checksum,
    /// Lower-case hex SHA-256 of the body: the signed payload hash (None: the SDK hashes
    /// a body in memory itself, or the body is not signed: `S3Config::signs_payload`).
    pub sha256_hex: Option<String>,
    pub md5: Option<String>,
    pub chunks: Option<ChunkSums>,
}

/// The first pass: reads `size` bytes of `src` in order and hashes them (the SHA-256 of
/// the body only if it is to be signed: `sign`).
pub(super) fn hash_file(
    src: &Dest,
    size: u64,
    algo: ChecksumAlgo,
    want_md5: bool,
    sign: bool,
) -> Result<Hashed, StoreError> {
    use sha2::Digest as _;
    let mut sum = Hasher::new(algo);
    let mut sha = sign.then(sha2::Sha256::new);
    let mut md5 = want_md5.then(md5::Md5::new);
    let mut cs = ChunkSummer::new(size);
    let mut buf = vec![0u8; CHUNK.min(size as usize)];
    let mut off = 0u64;
    while off < size {
        let n = (CHUNK as u64).min(size - off) as usize;
        let b = &mut buf[..n];
        read_mapped(&src.file, src.extents.as_ref(), b, off)?;
        sum.update(b);
        if let Some(s) = sha.as_mut() {
            s.update(&*b);
        }
        if let Some(m) = md5.as_mut() {
            md5::Digest::update(m, &*b);
        }
        cs.update(b);
        off += n as u64;
    }
    Ok(Hashed {
        checksum: sum.finalize(),
        sha256_hex: sha.map(|s| hex::encode(s.finalize())),
        md5: md5.map(|m| super::b64(&md5::Digest::finalize(m))),
        chunks: cs.finish(),
    })
}

/// The second pass: `size` bytes of `src` as a request body, made again from the start
/// for each attempt the SDK makes.
pub(super) fn body(src: Arc<Dest>, size: u64) -> SdkBody {
    SdkBody::retryable(move || SdkBody::from_body_1_x(FileBody::new(src.clone(), size)))
}

/// Reads the file one chunk ahead of the connection, on the blocking pool, each chunk
/// after its share of the upload bandwidth (`[limits] upload_bwlimit`).
struct FileBody {
    src: Arc<Dest>,
    size: u64,
    /// Bytes handed to the connection so far.
    sent: u64,
    /// The offset the next read starts at.
    next: u64,
    reading: Option<JoinHandle<Result<Bytes, StoreError>>>,
}

impl FileBody {
    fn new(src: Arc<Dest>, size: u64) -> Self {
        FileBody {
            src,
            size,
            sent: 0,
            next: 0,
            reading: None,
        }
    }

    fn read_ahead(&mut self) {
        if self.reading.is_some() || self.next >= self.size {
            return;
        }
        let n = (CHUNK as u64).min(self.size - self.next) as usize;
        let (src, off) = (self.src.clone(), self.next);
        self.next += n as u64;
        // The upload bandwidth limit is taken chunk by chunk, as the body goes out.
        self.reading = Some(tokio::spawn(async move {
            super::UPLOAD_BW.take(n as u64).await;
            super::blocking(move || {
                let mut v = vec![0u8; n];
                read_mapped(&src.file, src.extents.as_ref(), &mut v, off)?;
                Ok(Bytes::from(v))
            })
            .await
        }));
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = StoreError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StoreError>>> {
        let this = self.get_mut();
        this.read_ahead();
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let got = match Pin::new(reading).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        this.reading = None;
        let chunk = match got {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(e) => {
                return Poll::Ready(Some(Err(StoreError::new(
                    StoreErrorKind::Other,
                    format!("reading the upload body: {e}"),
                ))))
            }
        };
        this.sent += chunk.len() as u64;
        // The next chunk is read while this one is sent.
        this.read_ahead();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.size
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.size - self.sent)
    }
}

impl Drop for FileBody {
    /// A body dropped mid-way (the request failed, an attempt is retried) stops its read
    /// ahead, which may still be waiting for its share of the bandwidth.
    fn drop(&mut self) {
        if let Some(r) = self.reading.take() {
            r.abort();
        }
    }
}

/// Signs the request with the body's SHA-256 computed by the first pass (the SDK cannot
/// hash a streamed body itself and would send it unsigned).
#[derive(Debug)]
pub(super) struct SignedPayload(pub String);

impl Intercept for SignedPayload {
    fn name(&self) -> &'static str {
        "coldtier-signed-payload"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}
