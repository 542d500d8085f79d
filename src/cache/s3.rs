//! `s3://BUCKET/PREFIX?endpoint=URL&region=REGION`: a cache in S3-compatible object storage (AWS
//! S3, MinIO, R2, Ceph RGW, ...), through the `object_store` crate behind a blocking facade over
//! a tokio runtime this backend owns.
//!
//! Query parameters (Nix's spelling): `endpoint` (default: AWS for the region; `http://`
//! endpoints are allowed), `region` (default `AWS_REGION`, else `us-east-1`); any other parameter
//! is refused. Credentials and other settings come from the `AWS_*` variables object_store knows
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...); without keys it
//! asks the instance metadata service, as AWS SDKs do. Requests are path-style
//! (`ENDPOINT/BUCKET/KEY`).
//!
//! Puts up to [`PART_SIZE`] are one PUT; larger bodies are multipart uploads of [`PART_SIZE`]
//! parts, [`PARTS_IN_FLIGHT`] at a time, read from the body as they go; both are atomic (an
//! object appears when its upload completes; a failed multipart upload is aborted). `open`
//! streams one GET (one version of the object, whatever puts happen meanwhile); within its retry
//! budget object_store resumes a broken body with a ranged GET of the same ETag. Small requests have a 120 s
//! timeout; a streamed body has none in total (a big archive takes what it takes) but fails
//! after [`IDLE_TIMEOUT`] without a byte.
//!
//! object_store retries 5xx, connection errors and timeouts ([`RETRIES`] retries, jittered
//! exponential backoff). Errors map by type: NotFound is absent; Unauthenticated / PermissionDenied (401,
//! 403: a wrong key or signature) is [`CacheError::Unauthorized`]; a connection that could not
//! be made is [`CacheError::Unreachable`]; other transport and server errors are
//! [`CacheError::Transient`] (object_store does not expose the status of those, so an unexpected
//! 4xx lands there too); the rest is [`CacheError::Protocol`].

use std::error::Error as StdError;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::runtime::Runtime;

use super::{check_key, Body, CacheBackend, CacheError};

/// Upload part size: S3 wants parts of at least 5 MiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once; memory held by a put is about `(PARTS_IN_FLIGHT + 1) * PART_SIZE`.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Retries object_store makes of a failed request.
pub const RETRIES: usize = 3;
/// The longest wait for the next bytes of a streamed body.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A cache under an S3 prefix.
#[derive(Debug)]
pub struct S3Cache {
    url: String,
    bucket: String,
    /// Empty, or a key-like path without trailing `/`.
    prefix: String,
    store: AmazonS3,
    /// The same bucket with no overall request timeout, for `open`'s long bodies.
    streaming: AmazonS3,
    runtime: Arc<Runtime>,
}

impl S3Cache {
    /// The cache `url` names, configured from `env` (`AWS_*` variables; `std::env::vars()` in
    /// [`super::open_cache`]).
    pub fn new(
        url: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, CacheError> {
        let bad = |reason: String| CacheError::BadUrl {
            url: url.to_string(),
            reason,
        };
        if url.contains('#') {
            return Err(bad("an s3 URL takes no fragment".into()));
        }
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://BUCKET/PREFIX".into()))?;
        // Split by hand: Url would resolve `..` in the prefix instead of refusing it.
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err(bad(
                "the bucket name is missing or not only lowercase letters, digits, '.' and '-' \
                 (give the server as ?endpoint=URL and credentials in AWS_ACCESS_KEY_ID / \
                 AWS_SECRET_ACCESS_KEY)"
                    .into(),
            ));
        }
        let bucket = bucket.to_string();
        let prefix = prefix.trim_end_matches('/').to_string();
        if !prefix.is_empty() {
            check_key(&prefix).map_err(|e| bad(format!("bad prefix: {e}")))?;
        }

        let mut builder = AmazonS3Builder::new();
        for (name, value) in env {
            if !name.starts_with("AWS_") {
                continue;
            }
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        let (mut endpoint, mut region) = (None, None);
        for (name, value) in reqwest::Url::parse(&format!("s3://b/?{query}"))
            .map_err(|e| bad(e.to_string()))?
            .query_pairs()
        {
            let slot = match &*name {
                "endpoint" => &mut endpoint,
                "region" => &mut region,
                other => {
                    return Err(bad(format!(
                        "unknown parameter {other:?} (known: endpoint, region)"
                    )))
                }
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(bad(format!("parameter {name:?} given twice")));
            }
        }
        if let Some(endpoint) = endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(bad("endpoint must be an http:// or https:// URL".into()));
            }
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        if let Some(region) = region {
            builder = builder.with_region(region);
        }
        let builder = builder
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(false)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "10s",
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: RETRIES,
                retry_timeout: Duration::from_secs(120),
            });
        let build = |timeout: &str| {
            builder
                .clone()
                .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), timeout)
                .build()
                .map_err(|e| CacheError::Setup {
                    url: url.to_string(),
                    source: Box::new(e),
                })
        };
        // Per request: a small object, a head, an upload part of PART_SIZE.
        let store = build("120s")?;
        // Stalls are caught by IDLE_TIMEOUT instead.
        let streaming = build("24h")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pybake-s3")
            .enable_all()
            .build()
            .map_err(|e| CacheError::Setup {
                url: url.to_string(),
                source: Box::new(e),
            })?;
        Ok(Self {
            url: url.to_string(),
            bucket,
            prefix,
            store,
            streaming,
            runtime: Arc::new(runtime),
        })
    }

    fn path(&self, key: &str) -> Result<ObjectPath, CacheError> {
        check_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        // Checked keys are valid object paths; this cannot fail.
        ObjectPath::parse(&full).map_err(|_| CacheError::BadKey {
            key: key.to_string(),
            reason: "not a valid object path",
        })
    }

    /// `s3://bucket/prefix/key`, for messages.
    fn entry(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}/{key}", self.bucket)
        } else {
            format!("s3://{}/{}/{key}", self.bucket, self.prefix)
        }
    }

    fn error(&self, key: &str, e: object_store::Error) -> CacheError {
        map_error(self.entry(key), e)
    }
}

fn map_error(url: String, e: object_store::Error) -> CacheError {
    use object_store::Error as E;
    match e {
        E::Unauthenticated { .. } | E::PermissionDenied { .. } => CacheError::Unauthorized {
            url,
            source: Box::new(e),
        },
        E::Generic { .. } if connect_failed(&e) => CacheError::Unreachable {
            url,
            source: Box::new(e),
        },
        // Server errors and timeouts (already retried), bodies cut short.
        E::Generic { .. } | E::JoinError { .. } => CacheError::Transient {
            url,
            tries: 0,
            source: Box::new(e),
        },
        E::NotFound { .. } => CacheError::Protocol {
            url,
            reason: "not found: does the bucket exist?".into(),
            source: Some(Box::new(e)),
        },
        _ => CacheError::Protocol {
            url,
            reason: "the S3 server refused the request".into(),
            source: Some(Box::new(e)),
        },
    }
}

/// Whether the request never reached a server: a refused connection, an unknown host.
fn connect_failed(e: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err
            .downcast_ref::<HttpError>()
            .is_some_and(|h| h.kind() == HttpErrorKind::Connect)
        {
            return true;
        }
        cause = err.source();
    }
    false
}

impl CacheBackend for S3Cache {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path(key)?;
        let too_large = || CacheError::TooLarge {
            url: self.entry(key),
            limit,
        };
        self.runtime.block_on(async {
            let got = match self.store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error(key, e)),
            };
            if got.meta.size > limit {
                return Err(too_large());
            }
            let bytes = got.bytes().await.map_err(|e| self.error(key, e))?;
            if bytes.len() as u64 > limit {
                return Err(too_large());
            }
            Ok(Some(bytes.to_vec()))
        })
    }

    fn open(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        let path = self.path(key)?;
        let got = match self.runtime.block_on(self.streaming.get(&path)) {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(key, e)),
        };
        Ok(Some(Box::new(StreamReader {
            stream: got.into_stream(),
            runtime: self.runtime.clone(),
            url: self.entry(key),
            chunk: Bytes::new(),
        })))
    }

    fn exists(&self, key: &str) -> Result<bool, CacheError> {
        let path = self.path(key)?;
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(key, e)),
        }
    }

    fn put(&self, key: &str, body: Body<'_>) -> Result<(), CacheError> {
        let path = self.path(key)?;
        let (mut reader, len) = body.open()?;
        let read_err = |e| CacheError::local(&body.path(), e);
        if len <= PART_SIZE as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            reader.read_to_end(&mut bytes).map_err(read_err)?;
            check_length(len, bytes.len() as u64).map_err(read_err)?;
            self.runtime
                .block_on(self.store.put(&path, PutPayload::from(bytes)))
                .map_err(|e| self.error(key, e))?;
            return Ok(());
        }
        let upload = self
            .runtime
            .block_on(self.store.put_multipart(&path))
            .map_err(|e| self.error(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        match self.send_parts(key, &mut writer, &mut reader, len, &body) {
            Ok(()) => self
                .runtime
                .block_on(writer.finish())
                .map(drop)
                .map_err(|e| self.error(key, e)),
            Err(e) => {
                // Parts uploaded so far cost storage until aborted; the error to report is `e`.
                let _ = self.runtime.block_on(writer.abort());
                Err(e)
            }
        }
    }
}

impl S3Cache {
    /// Reads `reader` a part at a time into `writer`, at most [`PARTS_IN_FLIGHT`] uploading.
    fn send_parts(
        &self,
        key: &str,
        writer: &mut WriteMultipart,
        reader: &mut dyn Read,
        len: u64,
        body: &Body<'_>,
    ) -> Result<(), CacheError> {
        let read_err = |e| CacheError::local(&body.path(), e);
        let mut sent = 0u64;
        loop {
            let mut part = Vec::with_capacity(PART_SIZE);
            reader
                .take(PART_SIZE as u64)
                .read_to_end(&mut part)
                .map_err(read_err)?;
            if part.is_empty() {
                break;
            }
            sent += part.len() as u64;
            self.runtime
                .block_on(writer.wait_for_capacity(PARTS_IN_FLIGHT))
                .map_err(|e| self.error(key, e))?;
            // WriteMultipart spawns the part's upload onto the runtime.
            let _entered = self.runtime.enter();
            writer.put(Bytes::from(part));
        }
        check_length(len, sent).map_err(read_err)
    }
}

fn check_length(expected: u64, got: u64) -> io::Result<()> {
    if got == expected {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the file changed while it was uploaded: {got} bytes read of {expected}"),
    ))
}

/// A streamed body read from blocking code.
struct StreamReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    runtime: Arc<Runtime>,
    url: String,
    chunk: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            if buf.is_empty() {
                return Ok(0);
            }
            let next = self
                .runtime
                .block_on(async { tokio::time::timeout(IDLE_TIMEOUT, self.stream.next()).await });
            match next {
                Err(_elapsed) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{}: no data for {} s", self.url, IDLE_TIMEOUT.as_secs()),
                    ))
                }
                Ok(None) => return Ok(0),
                Ok(Some(Ok(bytes))) => self.chunk = bytes,
                Ok(Some(Err(e))) => return Err(io::Error::other(map_error(self.url.clone(), e))),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "id".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "secret".into()),
        ]
    }

    #[test]
    fn urls_give_bucket_prefix_endpoint_and_region() {
        let cache = S3Cache::new(
            "s3://ci-cache/pybake/v1?endpoint=http://127.0.0.1:9000&region=eu-west-3",
            creds(),
        )
        .unwrap();
        assert_eq!(
            cache.entry("x.narinfo"),
            "s3://ci-cache/pybake/v1/x.narinfo"
        );
        assert_eq!(cache.path("nar/a").unwrap().as_ref(), "pybake/v1/nar/a");
        let bare = S3Cache::new("s3://b", creds()).unwrap();
        assert_eq!(bare.path("k").unwrap().as_ref(), "k");
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in [
            "s3://",
            "s3://Bucket/p",
            "s3://b:9000/p",
            "s3://u@b/p",
            "s3://b/p?endpoint=ftp://x",
            "s3://b/p#f",
            "s3://b/p?profile=x",
            "s3://b/p?region=a&region=b",
            "s3://b/../x",
            "s3://b/p/.hidden",
        ] {
            assert!(
                matches!(S3Cache::new(url, creds()), Err(CacheError::BadUrl { .. })),
                "{url} accepted"
            );
        }
    }
}
