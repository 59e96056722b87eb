//! Hanging protocols: how the reading view lays out a study (per modality and
//! body part: which series of the current study and of its most recent prior
//! go in which viewport, in which window). The viewer applies them
//! (`app/src/reader/hanging/`); the server only checks and serves them.
//!
//! The protocols are a JSON file the operator edits: the one named by
//! `hanging_protocols` in the config (relative to the config file's folder;
//! it must exist), else `hanging_protocols.json` in the config file's folder
//! when there is one, else the built-in `hanging_protocols.json`. The file is
//! read again on every request, so that an edit applies to the next study
//! opened, and checked against the model below (unknown fields refused).
//! An invalid file stops `pacs serve` from starting, with the file, the line
//! and the reason; one that becomes invalid while the server runs is answered
//! 500 with the same message and the viewer opens studies in its plain
//! layout. Not done here: matching studies to protocols (the viewer does).

use std::path::PathBuf;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// The built-in protocols (CT chest, MR brain).
pub const DEFAULT_PROTOCOLS: &str = include_str!("hanging_protocols.json");

/// The route the viewer reads.
pub const ROUTE: &str = "/api/v1/hanging-protocols";

/// The file looked for in the config file's folder.
pub const FILE_NAME: &str = "hanging_protocols.json";

/// Most viewports a protocol may fill (the reader's largest layout is 2×2).
const MAX_VIEWPORTS: usize = 4;

/// The viewer's CT window presets (`app/src/reader/pane.ts`, `CT_PRESETS`).
const WINDOWS: [&str; 8] = [
    "brain",
    "subdural",
    "stroke",
    "lung",
    "mediastinum",
    "abdomen",
    "liver",
    "bone",
];

/// Where the protocols come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    /// Named in the config: a missing file is an error. Otherwise a missing
    /// file means the built-in protocols.
    pub required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    protocols: Vec<Protocol>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Protocol {
    id: String,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    name: String,
    modality: String,
    #[serde(default)]
    body_parts: Vec<String>,
    viewports: Vec<Viewport>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // study, orientation and the expressions: checked by their types only
struct Viewport {
    study: StudyRef,
    #[serde(default)]
    orientation: Option<Orientation>,
    /// A case-insensitive regular expression (JavaScript syntax) on Series Description.
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    exclude: Option<String>,
    /// A CT window preset of the viewer (`brain`, `lung`, `mediastinum`, …).
    #[serde(default)]
    window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StudyRef {
    Current,
    Prior,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Orientation {
    Axial,
    Sagittal,
    Coronal,
}

/// Why a protocols file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HangingError {
    #[error("cannot read hanging protocols {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hanging protocols {path} are not valid: {reason}")]
    Invalid { path: String, reason: String },
}

/// Checks protocols text against the model.
pub fn check(text: &str, origin: &str) -> Result<(), HangingError> {
    let invalid = |reason: String| HangingError::Invalid {
        path: origin.to_owned(),
        reason,
    };
    let f: File = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if f.version != 1 {
        return Err(invalid(format!("version {} is not 1", f.version)));
    }
    let mut ids = std::collections::HashSet::new();
    for p in &f.protocols {
        if p.id.is_empty() || !ids.insert(p.id.as_str()) {
            return Err(invalid(format!(
                "protocol id {:?} is empty or repeated",
                p.id
            )));
        }
        if p.modality.is_empty() {
            return Err(invalid(format!("protocol {:?} names no modality", p.id)));
        }
        if p.viewports.is_empty() || p.viewports.len() > MAX_VIEWPORTS {
            return Err(invalid(format!(
                "protocol {:?} has {} viewports (1 to {MAX_VIEWPORTS})",
                p.id,
                p.viewports.len()
            )));
        }
        if let Some(w) = p
            .viewports
            .iter()
            .filter_map(|v| v.window.as_deref())
            .find(|w| !WINDOWS.contains(w))
        {
            return Err(invalid(format!(
                "protocol {:?}: window {w:?} is not one of {}",
                p.id,
                WINDOWS.join(", ")
            )));
        }
        if p.body_parts.iter().any(String::is_empty) {
            return Err(invalid(format!(
                "protocol {:?} has an empty body part",
                p.id
            )));
        }
    }
    Ok(())
}

/// The protocols text: the file's (checked), or the built-in one.
pub fn load(source: Option<&Source>) -> Result<String, HangingError> {
    let Some(source) = source else {
        return Ok(DEFAULT_PROTOCOLS.to_owned());
    };
    let text = match std::fs::read_to_string(&source.path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !source.required => {
            return Ok(DEFAULT_PROTOCOLS.to_owned());
        }
        Err(e) => {
            return Err(HangingError::Read {
                path: source.path.clone(),
                source: e,
            })
        }
    };
    check(&text, &source.path.display().to_string())?;
    Ok(text)
}

/// `GET /api/v1/hanging-protocols`: the protocols as JSON.
pub fn router(source: Option<Source>) -> Router {
    Router::new().route(ROUTE, get(serve)).with_state(source)
}

async fn serve(State(source): State<Option<Source>>) -> Response {
    let loaded = tokio::task::spawn_blocking(move || load(source.as_ref())).await;
    let no_store = (header::CACHE_CONTROL, "no-store");
    match loaded {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, "application/json"), no_store], text).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "hanging protocols");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [no_store],
                format!("{e}\n"),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "hanging protocols: read failed\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_protocols_are_valid() {
        check(DEFAULT_PROTOCOLS, "built-in").unwrap();
    }

    #[test]
    fn invalid_protocols_are_refused_with_the_reason() {
        let cases = [
            ("{", "EOF"),
            (r#"{"version":2,"protocols":[]}"#, "version 2"),
            (
                "{\n  \"version\": 1,\n  \"protocols\": [\n    { \"id\": \"a\" }\n  ]\n}",
                "missing field `modality` at line 4",
            ),
            (
                r#"{"version":1,"protocols":[{"id":"a","modality":"CT","viewports":[{"study":"current","window":"lungs"}]}]}"#,
                "window \"lungs\" is not one of",
            ),
            (r#"{"version":1,"protocols":[],"extra":1}"#, "unknown field"),
            (
                r#"{"version":1,"protocols":[{"id":"a","modality":"CT","viewports":[]}]}"#,
                "0 viewports",
            ),
            (
                r#"{"version":1,"protocols":[{"id":"a","modality":"CT","viewports":[{"study":"older"}]}]}"#,
                "unknown variant",
            ),
            (
                r#"{"version":1,"protocols":[{"id":"a","modality":"CT","viewports":[{"study":"current"}]},{"id":"a","modality":"MR","viewports":[{"study":"current"}]}]}"#,
                "repeated",
            ),
        ];
        for (text, want) in cases {
            let e = check(text, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        check(
            r#"{"version":1,"protocols":[{"id":"a","modality":"CT","bodyParts":["CHEST"],"viewports":[{"study":"prior","orientation":"axial","description":"lung","window":"lung"}]}]}"#,
            "t",
        )
        .unwrap();
    }

    #[test]
    fn a_missing_file_is_the_built_in_protocols_unless_named() {
        let dir = std::env::temp_dir().join(format!("sen-hanging-{}", std::process::id()));
        let path = dir.join(FILE_NAME);
        let quiet = Source {
            path: path.clone(),
            required: false,
        };
        assert_eq!(load(Some(&quiet)).unwrap(), DEFAULT_PROTOCOLS);
        let named = Source {
            path,
            required: true,
        };
        let e = load(Some(&named)).unwrap_err().to_string();
        assert!(e.contains("cannot read") && e.contains(FILE_NAME), "{e}");
    }
}
