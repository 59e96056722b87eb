//! The viewer's files, built and embedded by `build.rs`.

/// One file of the built viewer.
#[derive(Debug)]
pub struct Asset {
    /// URL path, e.g. `/assets/index-3f2a.js`.
    pub path: &'static str,
    pub mime: &'static str,
    /// A strong ETag (quoted) derived from the content.
    pub etag: &'static str,
    pub body: &'static [u8],
    /// The gzip encoding of `body`, when it is worth it.
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The file at URL path `path`.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .and_then(|i| ASSETS.get(i))
}
