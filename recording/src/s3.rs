//! The S3 store, through aws-sdk-s3: path-style addressing and a custom endpoint so an
//! S3-compatible server (s3s-fs in the tests) works the same as AWS.
//!
//! - Private objects, server-side encryption (`AES256`) asked for on every object.
//! - Conditional create: `If-None-Match: *` on `PutObject` and `CompleteMultipartUpload`, so
//!   a retried upload never replaces an object. A retry refused with 412 counts as done only
//!   if the object there is ours (same size, same content checksum, same `sha256` metadata).
//! - Files from `multipart_threshold_bytes` up go in parts of `part_size_bytes`.
//! - Confirmation before the spool file may go: a `HeadObject` must show the file's size, our
//!   `sha256` metadata, and the same content: a single-part upload carries
//!   `x-amz-checksum-sha256`, which the server checks against the body it received and
//!   reports back; where it reports no full-object checksum (multipart), the ETag computed
//!   locally (MD5 of the file, or the MD5 of the parts' MD5s with `-<parts>`, which is what S3
//!   reports for SSE-S3 objects) must match instead.
//!
//! Credentials are static keys from the configuration (an IAM role would need aws-config,
//! a much larger dependency; not needed yet).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumMode, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use base64::Engine as _;
use md5::Digest as _;
use tokio::io::AsyncReadExt;

use crate::RecordingError;
use crate::store::{FileDigest, ObjectStore, RecordingsConfig, hex};

/// An S3 bucket holding recordings.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    multipart_threshold: u64,
    part_size: u64,
}

fn s3_err<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
    e: aws_sdk_s3::error::SdkError<E>,
) -> RecordingError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    RecordingError::S3 {
        status,
        detail: format!("{what}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)),
    }
}

/// The ETag S3 gives an object uploaded whole (`parts` = 1) or in parts, from the MD5s.
fn etag_of(part_md5s: &[[u8; 16]], whole: [u8; 16], multipart: bool) -> String {
    if !multipart {
        return hex(&whole);
    }
    let mut h = md5::Md5::new();
    for p in part_md5s {
        h.update(p);
    }
    format!("{}-{}", hex(&h.finalize()), part_md5s.len())
}

impl S3Store {
    /// A client for the configured bucket (no request is made yet).
    pub fn new(cfg: &RecordingsConfig) -> Result<Self, RecordingError> {
        let secret = match (&cfg.secret_access_key, &cfg.secret_access_key_file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        RecordingError::Config(format!(
                            "gateway.recordings.secret_access_key_file: {e}"
                        ))
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let (Some(id), Some(secret)) = (cfg.access_key_id.clone(), secret) else {
            return Err(RecordingError::Config(
                "gateway.recordings.access_key_id and secret_access_key: required for s3".into(),
            ));
        };
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .http_client(http)
            .credentials_provider(Credentials::new(id, secret, None, None, "switchboard"))
            .force_path_style(true)
            // Checksums are ours to choose (SHA-256 where it matters), not a CRC on everything.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // The uploader retries with its own backoff; the SDK tries twice at most.
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(endpoint) = &cfg.endpoint {
            b = b.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            multipart_threshold: cfg.multipart_threshold_bytes,
            part_size: cfg.part_size_bytes,
        })
    }

    /// Creates the bucket if it is missing (tests and first runs against a fresh server).
    pub async fn ensure_bucket(&self) -> Result<(), RecordingError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| s3_err("create bucket", e))?;
        Ok(())
    }

    /// MD5 of the whole file and of each part.
    async fn md5s(&self, path: &Path) -> Result<([u8; 16], Vec<[u8; 16]>), RecordingError> {
        let mut f = tokio::fs::File::open(path).await?;
        let mut whole = md5::Md5::new();
        let mut parts = Vec::new();
        let mut part = md5::Md5::new();
        let mut in_part = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let want = (self.part_size - in_part).min(buf.len() as u64) as usize;
            let n = f.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            whole.update(&buf[..n]);
            part.update(&buf[..n]);
            in_part += n as u64;
            if in_part == self.part_size {
                parts.push(std::mem::take(&mut part).finalize().into());
                in_part = 0;
            }
        }
        if in_part > 0 || parts.is_empty() {
            parts.push(part.finalize().into());
        }
        Ok((whole.finalize().into(), parts))
    }

    async fn put_single(
        &self,
        key: &str,
        path: &Path,
        digest: &FileDigest,
        sha_b64: String,
    ) -> Result<(), RecordingError> {
        // Large reads: each one is a hand-off to a blocking thread.
        let body = ByteStream::read_from()
            .path(path)
            .buffer_size(256 * 1024)
            .build()
            .await
            .map_err(|e| RecordingError::Io(std::io::Error::other(e)))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .content_length(digest.size as i64)
            .content_type("audio/wav")
            .server_side_encryption(ServerSideEncryption::Aes256)
            .checksum_sha256(sha_b64)
            .metadata("sha256", &digest.sha256)
            .if_none_match("*")
            .send()
            .await
            .map_err(|e| s3_err("put object", e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        digest: &FileDigest,
    ) -> Result<(), RecordingError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("audio/wav")
            .server_side_encryption(ServerSideEncryption::Aes256)
            .metadata("sha256", &digest.sha256)
            .send()
            .await
            .map_err(|e| s3_err("create multipart upload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| RecordingError::S3 {
                status: None,
                detail: "create multipart upload: no upload id".into(),
            })?
            .to_owned();
        let result = self.upload_parts(key, path, &upload_id).await;
        if result.is_err() {
            // Best effort: a failed upload's parts are not kept (S3 lifecycle rules catch
            // what this misses).
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        upload_id: &str,
    ) -> Result<(), RecordingError> {
        let mut f = tokio::fs::File::open(path).await?;
        let mut parts = Vec::new();
        let mut number = 1i32;
        loop {
            let mut buf = Vec::with_capacity(self.part_size as usize);
            let n = (&mut f).take(self.part_size).read_to_end(&mut buf).await?;
            if n == 0 {
                break;
            }
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(n as i64)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| s3_err("upload part", e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .if_none_match("*")
            .send()
            .await
            .map_err(|e| s3_err("complete multipart upload", e))?;
        Ok(())
    }

    /// Checks the stored object against the file: size, our `sha256` metadata, and either the
    /// server's own SHA-256 of what it stored (single-part objects on servers that keep
    /// checksums: it checked the body against ours on receipt) or, when it reports none or a
    /// composite one (multipart), the ETag computed from the file's MD5s. MD5 is computed only
    /// in that second case: hashing every recording twice was a large part of its CPU cost.
    async fn confirm(
        &self,
        key: &str,
        path: &Path,
        digest: &FileDigest,
        sha_b64: &str,
        multipart: bool,
    ) -> Result<(), RecordingError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| s3_err("head object", e))?;
        let size = head.content_length().unwrap_or(-1);
        let stored_etag = head.e_tag().unwrap_or_default().trim_matches('"');
        let meta_sha = head
            .metadata()
            .and_then(|m| m.get("sha256"))
            .map(String::as_str);
        let server_sha = head.checksum_sha256().filter(|c| !c.contains('-'));
        let same_content = match server_sha {
            Some(c) => c == sha_b64,
            None => {
                let (whole, parts) = self.md5s(path).await?;
                stored_etag == etag_of(&parts, whole, multipart)
            }
        };
        let ok =
            size == digest.size as i64 && meta_sha == Some(digest.sha256.as_str()) && same_content;
        if !ok {
            return Err(RecordingError::Mismatch {
                key: key.into(),
                detail: format!(
                    "stored {size} bytes etag {stored_etag} checksum {server_sha:?} sha256 \
                     {meta_sha:?}, spooled {} bytes sha256 {}",
                    digest.size, digest.sha256
                ),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, path: &Path, digest: &FileDigest) -> Result<(), RecordingError> {
        let multipart = digest.size >= self.multipart_threshold;
        let raw_sha: Vec<u8> = (0..digest.sha256.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(digest.sha256.get(i..i + 2)?, 16).ok())
            .collect();
        let sha_b64 = base64::engine::general_purpose::STANDARD.encode(raw_sha);
        let put = if multipart {
            self.put_multipart(key, path, digest).await
        } else {
            self.put_single(key, path, digest, sha_b64.clone()).await
        };
        match put {
            Ok(()) => {}
            // 412: the key exists. A retry after our own upload landed is fine; anything
            // else fails the confirmation below and is never overwritten.
            Err(RecordingError::S3 {
                status: Some(412), ..
            }) => {
                tracing::info!(key, "recording already stored; confirming it is ours");
            }
            // No status: the request broke off. A server that refuses a conditional PUT may
            // answer 412 before reading the body and close the connection (s3s-fs does), so
            // the client only sees a broken pipe; or the upload may have landed before the
            // connection failed. What is stored decides: ours confirms, other bytes are a
            // mismatch, nothing (or no answer) is the transport error, to be retried.
            Err(e @ RecordingError::S3 { status: None, .. }) => {
                return match self.confirm(key, path, digest, &sha_b64, multipart).await {
                    Ok(()) => Ok(()),
                    Err(mismatch @ RecordingError::Mismatch { .. }) => Err(mismatch),
                    Err(_) => Err(e),
                };
            }
            Err(e) => return Err(e),
        }
        self.confirm(key, path, digest, &sha_b64, multipart).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, RecordingError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(s3_err("head object", e)),
        }
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, RecordingError> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                return Ok(None);
            }
            Err(e) => return Err(s3_err("get object", e)),
        };
        let len = object.content_length().unwrap_or(0).max(0) as u64;
        if len > max_bytes {
            return Err(RecordingError::Config(format!(
                "{key}: {len} bytes, more than {max_bytes}"
            )));
        }
        let mut body = object.body;
        let mut bytes = Vec::with_capacity(len as usize);
        while let Some(chunk) = body.try_next().await.map_err(|e| RecordingError::S3 {
            status: None,
            detail: format!("get object body: {e}"),
        })? {
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(RecordingError::Config(format!(
                    "{key}: more than {max_bytes} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }

    async fn delete(&self, key: &str) -> Result<(), RecordingError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_err("delete object", e))?;
        Ok(())
    }

    async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, RecordingError> {
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| RecordingError::Config(format!("presign: {e}")))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(cfg)
            .await
            .map_err(|e| s3_err("presign", e))?;
        Ok(Some(req.uri().to_string()))
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
}
