//! Produced images, served at presigned-looking URLs like the real API's storage links.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{imaging::Encoded, imaging::Format, AppState};

/// Runs whose images are kept; the oldest are forgotten first.
const MAX_RUNS: usize = 1000;

/// Images by run id, and the per-process key that signs their URLs.
#[derive(Default)]
pub(crate) struct FileStore {
    key: RandomState,
    inner: Mutex<Stored>,
}

#[derive(Default)]
struct Stored {
    images: HashMap<String, Arc<Vec<(Format, Bytes)>>>,
    order: VecDeque<String>,
}

impl FileStore {
    pub(crate) fn put(&self, run_id: &str, images: Vec<Encoded>) {
        let images = images
            .into_iter()
            .map(|e| (e.format, Bytes::from(e.bytes)))
            .collect();
        let mut stored = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if stored.order.len() >= MAX_RUNS {
            if let Some(old) = stored.order.pop_front() {
                stored.images.remove(&old);
            }
        }
        stored.order.push_back(run_id.to_string());
        stored.images.insert(run_id.to_string(), Arc::new(images));
    }

    pub(crate) fn get(&self, run_id: &str, index: usize) -> Option<(Format, Bytes)> {
        let stored = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        stored.images.get(run_id)?.get(index).cloned()
    }

    /// Keyed hash of everything the URL grants; unguessable without the process's key.
    pub(crate) fn sign(&self, run_id: &str, name: &str, expires: u64) -> String {
        format!("{:016x}", self.key.hash_one((run_id, name, expires)))
    }
}

/// The absolute URL of a stored image, on the host the client reached us by.
pub(crate) fn url(
    host: &str,
    files: &FileStore,
    run_id: &str,
    index: usize,
    format: Format,
    expires: u64,
) -> String {
    let name = format!("{index}.{}", format.ext());
    let signature = files.sign(run_id, &name, expires);
    format!("http://{host}/__mock/files/{run_id}/{name}?expires={expires}&signature={signature}")
}

#[derive(Deserialize)]
pub(crate) struct Presigned {
    expires: Option<u64>,
    signature: Option<String>,
}

/// `GET /__mock/files/{run_id}/{index}.{ext}`: 403 for a bad signature or an expired URL.
pub(crate) async fn serve(
    State(state): State<Arc<AppState>>,
    Path((run_id, name)): Path<(String, String)>,
    Query(query): Query<Presigned>,
) -> Response {
    let (Some(expires), Some(signature)) = (query.expires, query.signature) else {
        return (
            StatusCode::FORBIDDEN,
            "AccessDenied: missing expires or signature",
        )
            .into_response();
    };
    if signature != state.files.sign(&run_id, &name, expires) {
        return (StatusCode::FORBIDDEN, "SignatureDoesNotMatch").into_response();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if expires < now {
        return (StatusCode::FORBIDDEN, "AccessDenied: Request has expired").into_response();
    }
    let index = name.split('.').next().and_then(|i| i.parse().ok());
    match index.and_then(|i| state.files.get(&run_id, i)) {
        Some((format, bytes)) => (
            [
                (header::CONTENT_TYPE, format.content_type()),
                (header::CACHE_CONTROL, "private, max-age=86400"),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "NoSuchKey").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::mock::scenario::Registry;

    #[tokio::test]
    async fn expired_tampered_and_missing_files() {
        let state = Arc::new(AppState {
            www_dir: ".".into(),
            scenarios: Registry::new([0, 0, 0], Vec::new()),
            files: FileStore::default(),
            assets: Default::default(),
            requests: AtomicU64::new(0),
            callback_client: Default::default(),
            default_callback_url: None,
        });
        let image = Encoded {
            width: 1,
            height: 1,
            format: Format::Png,
            bytes: vec![1, 2, 3],
        };
        state.files.put("run", vec![image]);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let call = |name: &str, expires: u64, signature: String| {
            let path = Path(("run".to_string(), name.to_string()));
            let query = Query(Presigned {
                expires: Some(expires),
                signature: Some(signature),
            });
            serve(State(state.clone()), path, query)
        };
        let valid = call(
            "0.png",
            now + 60,
            state.files.sign("run", "0.png", now + 60),
        )
        .await;
        assert_eq!(valid.status(), StatusCode::OK);
        assert_eq!(valid.headers()[header::CONTENT_TYPE], "image/png");
        let expired = call("0.png", now - 1, state.files.sign("run", "0.png", now - 1)).await;
        assert_eq!(expired.status(), StatusCode::FORBIDDEN);
        let other_file = call(
            "0.png",
            now + 60,
            state.files.sign("run", "1.png", now + 60),
        )
        .await;
        assert_eq!(other_file.status(), StatusCode::FORBIDDEN);
        let missing = call(
            "1.png",
            now + 60,
            state.files.sign("run", "1.png", now + 60),
        )
        .await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
