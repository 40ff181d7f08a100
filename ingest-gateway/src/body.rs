//! Turning an HTTP request body into payloads: multipart parts, each possibly zlib or gzip
//! compressed, under hard limits.
//!
//! The plugin compresses each multipart part (not the HTTP body) and says so with
//! `Content-Encoding: compress`, which the original server also read as gzip. We decide by
//! the bytes instead: zlib and gzip have distinct magic numbers, and JSON starts with
//! neither. Decompression streams into a buffer that stops one byte past the remaining
//! budget, so a zlib bomb costs at most the budget and is refused with 413.

use std::io::Read;

use bytes::Bytes;
use flate2::read::{GzDecoder, ZlibDecoder};
use futures::stream;

/// One decoded multipart part (or the whole body when it is not multipart).
#[derive(Debug)]
pub struct Part {
    /// The form field name (untrusted).
    pub name: String,
    pub file_name: Option<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("decompressed payload exceeds {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("body cannot be decompressed: {0}")]
    Undecompressable(String),
    #[error("malformed multipart body: {0}")]
    Multipart(String),
    #[error("too many parts in the upload: at most {limit}")]
    TooManyParts { limit: usize },
    #[error("the upload has no file part")]
    NoPart,
    #[error("expected exactly one file in a JSON upload, got {0}")]
    MoreThanOneFile(usize),
    #[error("duplicate part name {0:?}")]
    DuplicatePart(String),
}

impl BodyError {
    pub fn is_too_large(&self) -> bool {
        matches!(self, BodyError::BodyTooLarge { .. } | BodyError::DecompressedTooLarge { .. })
    }
}

/// Limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_parts: usize,
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Compression {
    Zlib,
    Gzip,
    None,
}

fn sniff(data: &[u8]) -> Compression {
    match data {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [cmf, flg, ..] if cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) * 256 + u16::from(*flg)) % 31 == 0 => {
            Compression::Zlib
        }
        _ => Compression::None,
    }
}

/// Decompress `data` when its bytes say it is zlib or gzip; otherwise return it as is.
/// `encoded` is true when the request declared a compression (`Content-Encoding`), in which
/// case data that is not compressed is refused. `budget` is what the request may still
/// decompress; it is reduced by the size of the result.
pub fn decompress(data: &[u8], encoded: bool, budget: &mut usize, limit: usize) -> Result<Vec<u8>, BodyError> {
    let kind = sniff(data);
    let out = match kind {
        Compression::None if encoded => {
            return Err(BodyError::Undecompressable(
                "Content-Encoding says compressed, but the bytes are neither zlib nor gzip".into(),
            ))
        }
        Compression::None => {
            if data.len() > *budget {
                return Err(BodyError::DecompressedTooLarge { limit });
            }
            data.to_vec()
        }
        Compression::Zlib => read_capped(ZlibDecoder::new(data), *budget, limit)?,
        Compression::Gzip => read_capped(GzDecoder::new(data), *budget, limit)?,
    };
    *budget -= out.len();
    Ok(out)
}

fn read_capped(reader: impl Read, cap: usize, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    reader
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Undecompressable(e.to_string()))?;
    if out.len() > cap {
        return Err(BodyError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

/// Does the `Content-Encoding` header declare a compression we read?
pub fn declares_compression(content_encoding: Option<&str>) -> bool {
    content_encoding
        .map(|v| v.split(',').any(|e| matches!(e.trim().to_ascii_lowercase().as_str(), "compress" | "gzip" | "deflate" | "x-gzip")))
        .unwrap_or(false)
}

/// Split a body into decompressed parts. A non-multipart body is one part named "".
pub async fn parts(
    body: Bytes,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    limits: Limits,
) -> Result<Vec<Part>, BodyError> {
    let encoded = declares_compression(content_encoding);
    let mut budget = limits.max_decompressed_bytes;
    let limit = limits.max_decompressed_bytes;
    let boundary = content_type.and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        if content_type.is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("multipart/")) {
            return Err(BodyError::Multipart("multipart content type without a boundary".into()));
        }
        let data = decompress(&body, encoded, &mut budget, limit)?;
        return Ok(vec![Part { name: String::new(), file_name: None, data }]);
    };
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(limits.max_body_bytes as u64));
    let mut multipart = multer::Multipart::with_constraints(
        stream::once(async move { Ok::<Bytes, std::io::Error>(body) }),
        boundary,
        constraints,
    );
    let mut out: Vec<Part> = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(BodyError::Multipart(e.to_string())),
        };
        if out.len() == limits.max_parts {
            return Err(BodyError::TooManyParts { limit: limits.max_parts });
        }
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        // Each part may carry its own Content-Encoding; the request header applies to all.
        let part_encoded = encoded
            || declares_compression(field.headers().get("content-encoding").and_then(|v| v.to_str().ok()));
        let raw = field.bytes().await.map_err(|e| BodyError::Multipart(e.to_string()))?;
        if out.iter().any(|p| p.name == name) {
            return Err(BodyError::DuplicatePart(name));
        }
        let data = decompress(&raw, part_encoded, &mut budget, limit)?;
        out.push(Part { name, file_name, data });
    }
    if out.is_empty() {
        return Err(BodyError::NoPart);
    }
    Ok(out)
}

/// The one JSON document of a build-API request.
pub fn single_document(mut parts: Vec<Part>) -> Result<Vec<u8>, BodyError> {
    match parts.len() {
        0 => Err(BodyError::NoPart),
        1 => Ok(parts.remove(0).data),
        n => Err(BodyError::MoreThanOneFile(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const LIMITS: Limits = Limits { max_body_bytes: 1 << 20, max_decompressed_bytes: 1 << 20, max_parts: 4 };

    #[test]
    fn zlib_gzip_and_plain_are_told_apart_by_their_bytes() {
        let doc = br#"{"run_info": {"id": "x"}}"#;
        for (data, encoded) in [(zlib(doc), true), (gzip(doc), true), (zlib(doc), false), (doc.to_vec(), false)] {
            let mut budget = 1 << 20;
            assert_eq!(decompress(&data, encoded, &mut budget, 1 << 20).unwrap(), doc);
            assert_eq!(budget, (1 << 20) - doc.len());
        }
        let mut budget = 1 << 20;
        assert!(matches!(decompress(doc, true, &mut budget, 1 << 20), Err(BodyError::Undecompressable(_))));
        let mut broken = zlib(doc);
        broken.truncate(6);
        assert!(matches!(decompress(&broken, true, &mut budget, 1 << 20), Err(BodyError::Undecompressable(_))));
    }

    #[test]
    fn a_zlib_bomb_is_refused_without_inflating_it() {
        let bomb = zlib(&vec![0u8; 64 << 20]); // 64 MiB of zeros: ~64 KiB compressed
        assert!(bomb.len() < 100_000);
        let mut budget = 1 << 20;
        let err = decompress(&bomb, true, &mut budget, 1 << 20).unwrap_err();
        assert_eq!(err, BodyError::DecompressedTooLarge { limit: 1 << 20 });
    }

    fn multipart(parts: &[(&str, Vec<u8>)]) -> (Bytes, String) {
        let boundary = "XyZzY";
        let mut body = Vec::new();
        for (name, data) in parts {
            write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n").unwrap();
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        write!(body, "--{boundary}--\r\n").unwrap();
        (Bytes::from(body), format!("multipart/form-data; boundary={boundary}"))
    }

    #[tokio::test]
    async fn multipart_parts_are_split_decompressed_and_counted() {
        let (body, ct) = multipart(&[("buildsense", zlib(b"{}"))]);
        let one = parts(body, Some(&ct), Some("compress"), LIMITS).await.unwrap();
        assert_eq!(single_document(one).unwrap(), b"{}");

        let (body, ct) = multipart(&[("a", b"1".to_vec()), ("b", b"2".to_vec())]);
        let two = parts(body, Some(&ct), None, LIMITS).await.unwrap();
        assert_eq!(single_document(two).unwrap_err(), BodyError::MoreThanOneFile(2));

        let many: Vec<_> = (0..5).map(|i| (["p0", "p1", "p2", "p3", "p4"][i], b"x".to_vec())).collect();
        let (body, ct) = multipart(&many);
        assert_eq!(parts(body, Some(&ct), None, LIMITS).await.unwrap_err(), BodyError::TooManyParts { limit: 4 });

        let (body, ct) = multipart(&[("a", b"1".to_vec()), ("a", b"2".to_vec())]);
        assert_eq!(parts(body, Some(&ct), None, LIMITS).await.unwrap_err(), BodyError::DuplicatePart("a".into()));
    }

    #[tokio::test]
    async fn broken_multipart_is_a_clear_error() {
        let body = Bytes::from_static(b"--XyZzY\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end");
        let err = parts(body, Some("multipart/form-data; boundary=XyZzY"), None, LIMITS).await.unwrap_err();
        assert!(matches!(err, BodyError::Multipart(_)), "{err:?}");
        let err = parts(Bytes::new(), Some("multipart/form-data"), None, LIMITS).await.unwrap_err();
        assert!(matches!(err, BodyError::Multipart(_)), "{err:?}");
    }

    #[tokio::test]
    async fn the_decompressed_budget_spans_all_parts() {
        let limits = Limits { max_decompressed_bytes: 1000, ..LIMITS };
        let (body, ct) = multipart(&[("a", zlib(&[b'a'; 600])), ("b", zlib(&[b'b'; 600]))]);
        let err = parts(body, Some(&ct), Some("compress"), limits).await.unwrap_err();
        assert_eq!(err, BodyError::DecompressedTooLarge { limit: 1000 });
    }
}
