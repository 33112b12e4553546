//! Uploaded assets: the records behind the three-step upload, their presigned URLs (the PUT's
//! and, once confirmed, the download's), S3-style XML errors, and the download itself.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::AppState;

/// Largest asset the API accepts (50 MiB).
pub(crate) const MAX_ASSET_BYTES: u64 = 52_428_800;
/// Uploaded bytes kept at once; the oldest files are forgotten first.
const MAX_STORED_BYTES: usize = 512 * 1024 * 1024;
/// Asset records kept at once (most are small, but creates that never upload must not pile up).
const MAX_ASSETS: usize = 10_000;
/// How long a confirmed asset's URL lasts, like the output URLs.
const URL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One asset, from its create on.
#[derive(Clone)]
pub(crate) struct Asset {
    pub id: String,
    /// The scenario it was created in: only that scenario can upload and confirm it.
    pub scenario: String,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub created_at: SystemTime,
    /// When the upload URL stops working, to the millisecond (its `expires` is whole seconds,
    /// which would let a 1 ms TTL live on for up to a second).
    pub upload_deadline: SystemTime,
    /// The uploaded bytes, once a PUT succeeded.
    pub file: Option<Bytes>,
    pub confirmed_at: Option<SystemTime>,
}

impl Asset {
    /// The upload URL's `expires`: the deadline, rounded up to a whole second.
    fn upload_expires(&self) -> u64 {
        let since = self
            .upload_deadline
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        since.as_secs() + u64::from(since.subsec_nanos() > 0)
    }
}

/// Why a PUT's bytes were not stored.
pub(crate) enum StoreRefused {
    /// The asset was forgotten meanwhile.
    Gone,
    /// The asset was confirmed: its file no longer changes.
    Confirmed,
}

/// What a confirmation finds.
pub(crate) enum Confirmation {
    Unknown,
    Incomplete,
    Done(Asset),
}

/// Assets by id, bounded by count and by stored bytes, and the per-process key signing their
/// URLs.
#[derive(Default)]
pub(crate) struct AssetStore {
    key: RandomState,
    inner: Mutex<Stored>,
}

#[derive(Default)]
struct Stored {
    assets: HashMap<String, Asset>,
    /// Ids by age, oldest first.
    order: VecDeque<String>,
    /// Total length of the files held.
    bytes: usize,
}

impl Stored {
    fn forget(&mut self, id: &str) {
        if let Some(asset) = self.assets.remove(id) {
            self.bytes -= asset.file.map_or(0, |f| f.len());
        }
        self.order.retain(|o| o != id);
    }
}

impl AssetStore {
    fn lock(&self) -> MutexGuard<'_, Stored> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new asset awaiting its upload.
    pub(crate) fn create(
        &self,
        scenario: &str,
        filename: String,
        mime_type: String,
        size_bytes: u64,
        upload_ttl: Duration,
    ) -> Asset {
        let now = SystemTime::now();
        let asset = Asset {
            id: format!("asset_{}", uuid::Uuid::new_v4().simple()),
            scenario: scenario.to_string(),
            filename,
            mime_type,
            size_bytes,
            created_at: now,
            upload_deadline: now + upload_ttl,
            file: None,
            confirmed_at: None,
        };
        let mut stored = self.lock();
        while stored.order.len() >= MAX_ASSETS {
            let Some(oldest) = stored.order.front().cloned() else {
                break;
            };
            stored.forget(&oldest);
        }
        stored.order.push_back(asset.id.clone());
        stored.assets.insert(asset.id.clone(), asset.clone());
        asset
    }

    pub(crate) fn get(&self, id: &str) -> Option<Asset> {
        self.lock().assets.get(id).cloned()
    }

    /// Stores (or, as S3 does, replaces) an asset's file, forgetting the oldest other files
    /// when the store is over its size.
    pub(crate) fn store(&self, id: &str, file: Bytes) -> Result<(), StoreRefused> {
        let mut stored = self.lock();
        let asset = stored.assets.get_mut(id).ok_or(StoreRefused::Gone)?;
        if asset.confirmed_at.is_some() {
            return Err(StoreRefused::Confirmed);
        }
        let (added, replaced) = (file.len(), asset.file.replace(file).map_or(0, |f| f.len()));
        stored.bytes = stored.bytes + added - replaced;
        while stored.bytes > MAX_STORED_BYTES {
            let oldest = stored
                .order
                .iter()
                .find(|o| *o != id && stored.assets.get(*o).is_some_and(|a| a.file.is_some()))
                .cloned();
            match oldest {
                Some(oldest) => stored.forget(&oldest),
                None => break,
            }
        }
        Ok(())
    }

    /// Confirms an upload of `scenario` (again, harmlessly, if it already was).
    pub(crate) fn confirm(&self, scenario: &str, id: &str) -> Confirmation {
        let mut stored = self.lock();
        match stored.assets.get_mut(id) {
            Some(asset) if asset.scenario == scenario => {
                if asset.file.is_none() {
                    return Confirmation::Incomplete;
                }
                asset.confirmed_at.get_or_insert_with(SystemTime::now);
                Confirmation::Done(asset.clone())
            }
            _ => Confirmation::Unknown,
        }
    }

    /// A confirmed asset's type and bytes.
    pub(crate) fn file(&self, id: &str) -> Option<(String, Bytes)> {
        let stored = self.lock();
        let asset = stored.assets.get(id).filter(|a| a.confirmed_at.is_some())?;
        Some((asset.mime_type.clone(), asset.file.clone()?))
    }

    /// Keyed hash of everything a URL grants; unguessable without the process's key. `what`
    /// keeps an upload URL's signature from being valid for the download and the reverse.
    fn sign(&self, what: &str, scenario: &str, id: &str, expires: u64) -> String {
        format!("{:016x}", self.key.hash_one((what, scenario, id, expires)))
    }

    pub(crate) fn sign_upload(&self, scenario: &str, id: &str, expires: u64) -> String {
        self.sign("upload", scenario, id, expires)
    }

    fn sign_download(&self, id: &str, expires: u64) -> String {
        self.sign("download", "", id, expires)
    }

    /// The presigned PUT URL, always under `/__mock/s/{scenario}/` (the default scenario's too)
    /// so that the PUT is logged and faulted in the asset's scenario.
    pub(crate) fn upload_url(&self, host: &str, asset: &Asset) -> String {
        let expires = asset.upload_expires();
        let signature = self.sign_upload(&asset.scenario, &asset.id, expires);
        format!(
            "http://{host}/__mock/s/{}/uploads/{}?expires={expires}&signature={signature}",
            asset.scenario, asset.id
        )
    }

    /// The signed download URL of a confirmed asset; fixed by the confirmation time, so that a
    /// repeated confirmation answers the same URL.
    pub(crate) fn download_url(&self, host: &str, asset: &Asset) -> String {
        let confirmed = asset.confirmed_at.unwrap_or(asset.created_at);
        let expires = unix(confirmed + URL_LIFETIME);
        let signature = self.sign_download(&asset.id, expires);
        format!(
            "http://{host}/__mock/assets/{}?expires={expires}&signature={signature}",
            asset.id
        )
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// An error as S3 (where presigned URLs point) sends it.
pub(crate) fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<Error><Code>{}</Code><Message>{}</Message></Error>",
        escape(code),
        escape(message)
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

pub(crate) fn request_expired() -> Response {
    s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired")
}

pub(crate) fn signature_mismatch() -> Response {
    s3_error(
        StatusCode::FORBIDDEN,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided",
    )
}

pub(crate) fn signature_missing() -> Response {
    s3_error(
        StatusCode::FORBIDDEN,
        "AccessDenied",
        "Query-string authentication requires the expires and signature parameters",
    )
}

/// A presigned URL's query.
#[derive(Deserialize)]
pub(crate) struct Presigned {
    pub expires: Option<u64>,
    pub signature: Option<String>,
}

/// `GET /__mock/assets/{id}?expires&signature`: a confirmed asset's bytes.
pub(crate) async fn serve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    // A malformed query is a bad signature here, as it is for the PUT.
    let query = Query::<Presigned>::try_from_uri(&uri).ok();
    let Some((expires, signature)) = query.and_then(|Query(q)| Some((q.expires?, q.signature?)))
    else {
        return signature_missing();
    };
    if signature != state.assets.sign_download(&id, expires) {
        return signature_mismatch();
    }
    if expires < unix(SystemTime::now()) {
        return request_expired();
    }
    match state.assets.file(&id) {
        Some((mime_type, bytes)) => (
            [
                (header::CONTENT_TYPE, mime_type),
                (header::CACHE_CONTROL, "private, max-age=86400".into()),
            ],
            bytes,
        )
            .into_response(),
        None => s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(store: &AssetStore, size: usize) -> String {
        let ttl = Duration::from_secs(60);
        let asset = store.create("s", "f.png".into(), "image/png".into(), size as u64, ttl);
        assert!(store.store(&asset.id, Bytes::from(vec![0; size])).is_ok());
        asset.id
    }

    #[test]
    fn the_oldest_files_go_first_when_the_store_is_full() {
        let store = AssetStore::default();
        let size = MAX_ASSET_BYTES as usize;
        let ids: Vec<_> = (0..11).map(|_| upload(&store, size)).collect();
        // 11 files of 50 MiB are over 512 MiB: the first went.
        assert!(store.get(&ids[0]).is_none());
        assert!(ids[1..].iter().all(|id| store.get(id).is_some()));
        assert_eq!(store.lock().bytes, 10 * size);
        // Replacing a file counts its new length only.
        assert!(store.store(&ids[10], Bytes::from_static(b"x")).is_ok());
        assert_eq!(store.lock().bytes, 9 * size + 1);
    }

    #[test]
    fn a_confirmed_file_no_longer_changes_and_others_scenarios_cannot_confirm() {
        let store = AssetStore::default();
        let id = upload(&store, 3);
        assert!(matches!(store.confirm("other", &id), Confirmation::Unknown));
        assert!(store.file(&id).is_none(), "not served before confirmation");
        assert!(matches!(store.confirm("s", &id), Confirmation::Done(_)));
        assert!(matches!(
            store.store(&id, Bytes::new()),
            Err(StoreRefused::Confirmed)
        ));
        assert_eq!(store.file(&id).map(|(_, b)| b.len()), Some(3));
    }

    #[tokio::test]
    async fn a_signed_url_to_a_forgotten_asset_is_a_404() {
        let state = Arc::new(AppState {
            www_dir: ".".into(),
            scenarios: crate::mock::scenario::Registry::new([0, 0, 0], Vec::new()),
            files: Default::default(),
            assets: AssetStore::default(),
            requests: Default::default(),
            callback_client: Default::default(),
            default_callback_url: None,
        });
        let expires = unix(SystemTime::now()) + 60;
        let signature = state.assets.sign_download("asset_gone", expires);
        let uri = format!("/__mock/assets/asset_gone?expires={expires}&signature={signature}");
        let path = Path("asset_gone".to_string());
        let reply = serve(State(state), path, uri.parse().unwrap()).await;
        assert_eq!(reply.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn upload_expiry_rounds_up_to_the_second() {
        let store = AssetStore::default();
        let mut asset = store.create("s", "f".into(), "image/png".into(), 1, Duration::ZERO);
        asset.upload_deadline = UNIX_EPOCH + Duration::from_secs(5);
        assert_eq!(asset.upload_expires(), 5);
        asset.upload_deadline += Duration::from_millis(1);
        assert_eq!(asset.upload_expires(), 6);
    }
}
