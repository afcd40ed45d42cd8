//! Content types by file extension.

/// Sent when the extension says nothing: the client must not guess a type to execute.
const DEFAULT: &str = "application/octet-stream";

/// Extension (matched case-insensitively) to media type. Textual types name UTF-8.
const TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("xml", "text/xml; charset=utf-8"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
];

/// Whether a type is worth a precompressed sidecar: text, and the structured and
/// scripted formats browsers fetch (JSON, JavaScript, XML, SVG, WebAssembly, the
/// uncompressed font formats). Images, media, archives and unknown types are already
/// compressed or not worth looking for: no sidecar is opened for them.
pub fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || matches!(
            content_type,
            "application/json" | "image/svg+xml" | "application/wasm" | "font/ttf" | "font/otf"
        )
}

/// The `Content-Type` for a `/`-separated path.
pub fn content_type(path: &str) -> &'static str {
    // One scan back from the end: the last name's extension is after the last `.`
    // found before any `/`.
    let b = path.as_bytes();
    let ext = match b.iter().rposition(|&c| c == b'.' || c == b'/') {
        Some(i) if b[i] == b'.' => &b[i + 1..],
        _ => return DEFAULT,
    };
    if ext.len() > LONGEST {
        return DEFAULT;
    }
    TYPES
        .iter()
        .find(|(e, _)| e.as_bytes().eq_ignore_ascii_case(ext))
        .map_or(DEFAULT, |&(_, t)| t)
}

/// The longest extension in [`TYPES`].
const LONGEST: usize = 5;

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn by_extension_case_insensitive() {
        assert_eq!(content_type("a/index.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("app.mjs"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.wasm"), "application/wasm");
        assert_eq!(content_type("x.tar.gz"), "application/gzip");
        assert_eq!(content_type("photo.JpEg"), "image/jpeg");
        assert_eq!(content_type("d.v/README"), "application/octet-stream");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("weird."), "application/octet-stream");
    }

    #[test]
    fn the_longest_extension_is_known() {
        let longest = super::TYPES.iter().map(|(e, _)| e.len()).max();
        assert_eq!(longest, Some(super::LONGEST));
    }

    proptest::proptest! {
        /// The one-scan lookup agrees with splitting the name off and then its
        /// extension.
        #[test]
        fn agrees_with_splitting(path in "[a-zA-Z./]{0,12}(html|JS|woff2|gz|x)?") {
            let name = path.rsplit('/').next().unwrap_or(&path);
            let want = match name.rsplit_once('.') {
                None => super::DEFAULT,
                Some((_, ext)) => super::TYPES
                    .iter()
                    .find(|(e, _)| e.eq_ignore_ascii_case(ext))
                    .map_or(super::DEFAULT, |&(_, t)| t),
            };
            proptest::prop_assert_eq!(content_type(&path), want);
        }
    }
}
