//! Run lifecycle, terminal statuses, failure fields and output shapes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

async fn at(start: Instant, ms: u64) {
    tokio::time::sleep_until((start + Duration::from_millis(ms)).into()).await;
}

#[tokio::test]
async fn a_run_goes_through_every_phase_on_time() {
    let app = test_app();
    let base = scenario(&app, json!({"lifecycle_ms": [400, 400, 400]})).await;
    let start = Instant::now();
    let run = create(&app, &base, kontext_input()).await;
    assert_eq!(run["status_code"], "queued");
    for field in [
        "started_at",
        "completed_at",
        "duration_ms",
        "output",
        "cost",
        "failure_code",
    ] {
        assert_eq!(run[field], Value::Null, "{field}");
    }
    assert!(run["created_at"].as_str().unwrap().ends_with("+00:00"));
    let id = &run["id"];
    assert_eq!(
        uuid::Uuid::parse_str(id.as_str().unwrap())
            .unwrap()
            .get_version_num(),
        4
    );

    at(start, 150).await;
    assert_eq!(get_run(&app, &base, id).await["status_code"], "queued");
    at(start, 600).await;
    let dispatching = get_run(&app, &base, id).await;
    assert_eq!(dispatching["status_code"], "dispatching");
    assert_eq!(dispatching["started_at"], Value::Null);
    at(start, 1000).await;
    let running = get_run(&app, &base, id).await;
    assert_eq!(running["status_code"], "running");
    assert!(running["started_at"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(running["completed_at"], Value::Null);
    at(start, 1400).await;
    let done = get_run(&app, &base, id).await;
    assert_eq!(done["status_code"], "succeeded");
    assert_eq!(done["duration_ms"], 400);
    assert_eq!(done["started_at"], running["started_at"]);
    assert_eq!(done["created_at"], run["created_at"]);
    assert!(done["completed_at"].as_str().unwrap() > done["started_at"].as_str().unwrap());
    assert_eq!(done["cost"], "0.04");
    assert_eq!(done["input"]["prompt"], "make it teal");
    assert!(done["input"]["seed"].is_u64(), "seed filled in");
    assert_eq!(done["output"]["seed"], done["input"]["seed"]);
}

#[tokio::test]
async fn the_default_scenario_uses_the_configured_lifecycle() {
    let app = test_app(); // lifecycle [0, 0, 0]
    let run = post(
        &app,
        &format!("/api/runflow{KONTEXT_RUNS}"),
        &json!({"input": kontext_input()}),
    )
    .await;
    let run = run.json();
    assert_eq!(
        run["status_code"], "queued",
        "a create always answers queued"
    );
    let again = get_run(&app, "/api/runflow", &run["id"]).await;
    assert_eq!(again["status_code"], "succeeded");
    // The default scenario is also reachable by name.
    assert_eq!(
        get_run(&app, "/__mock/s/default", &run["id"]).await["id"],
        run["id"]
    );
}

async fn finished(final_status: &str, extra: Value) -> Value {
    let app = test_app();
    let mut config = json!({"lifecycle_ms": [0, 0, 0], "final_status": final_status});
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let base = scenario(&app, config).await;
    let mut input = kontext_input();
    input["num_images"] = 2.into();
    let run = create(&app, &base, input).await;
    get_run(&app, &base, &run["id"]).await
}

#[tokio::test]
async fn every_terminal_status_is_sent_verbatim() {
    let succeeded = finished("succeeded", json!({})).await;
    assert_eq!(succeeded["status_code"], "succeeded");
    assert_eq!(succeeded["output"]["outputs"].as_array().unwrap().len(), 2);
    assert_eq!(succeeded["cost"], "0.08");

    let partial = finished("partial_succeeded", json!({})).await;
    assert_eq!(partial["status_code"], "partial_succeeded");
    assert_eq!(partial["output"]["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(partial["cost"], "0.04");

    for status in ["failed", "errored"] {
        let run = finished(status, json!({})).await;
        assert_eq!(run["status_code"], status);
        assert_eq!(run["output"], Value::Null);
        assert_eq!(run["cost"], Value::Null);
        assert_eq!(run["failure_code"], "PROVIDER_ERROR");
        assert_eq!(run["failure_stage_code"], "inference");
        assert_eq!(
            run["failure_message"],
            "The provider could not process the image"
        );
        assert!(run["completed_at"].is_string());
    }
    for status in ["canceled", "cancelled"] {
        let run = finished(status, json!({})).await;
        assert_eq!(run["status_code"], status);
        assert_eq!(run["output"], Value::Null);
        assert_eq!(run["failure_code"], Value::Null);
        assert!(run["completed_at"].is_string());
    }
    let unknown = finished("mystery", json!({})).await;
    assert_eq!(unknown["status_code"], "mystery");
    assert_eq!(
        unknown["completed_at"],
        Value::Null,
        "an unknown status never completes"
    );
    assert_eq!(unknown["output"], Value::Null);
}

#[tokio::test]
async fn failure_fields_modern_legacy_and_overridden() {
    let legacy = finished("failed", json!({"failure_fields": "legacy"})).await;
    assert_eq!(legacy["failure_code"], "PROVIDER_ERROR");
    assert_eq!(legacy["failure_stage"], "inference");
    assert_eq!(
        legacy["error"],
        json!({"code": "PROVIDER_ERROR", "message": "The provider could not process the image"})
    );
    assert!(legacy.get("failure_stage_code").is_none());
    assert!(legacy.get("failure_message").is_none());

    let succeeded = finished("succeeded", json!({"failure_fields": "legacy"})).await;
    assert_eq!(succeeded["error"], Value::Null);

    let custom = finished(
        "errored",
        json!({"failure": {"code": "NSFW", "message": "Blocked"}}),
    )
    .await;
    assert_eq!(custom["failure_code"], "NSFW");
    assert_eq!(custom["failure_stage_code"], "inference");
    assert_eq!(custom["failure_message"], "Blocked");
}

#[tokio::test]
async fn every_output_shape() {
    let outputs = finished("succeeded", json!({"output_shape": "outputs"})).await["output"].clone();
    let first = &outputs["outputs"][0];
    assert_eq!(first["type"], "image");
    assert_eq!(
        (first["width"].as_u64(), first["height"].as_u64()),
        (Some(64), Some(48))
    );
    assert_eq!(first["content_type"], "image/jpeg");
    assert!(first["url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:8080/__mock/files/"));
    assert_eq!(
        outputs["model_data"],
        json!({"prompt": "make it teal", "actual_prompt": "make it teal"})
    );
    assert_eq!(outputs["nsfw_detected"], false);
    assert_eq!(outputs["timing"], json!({"inference_ms": 0}));

    let urls = finished("succeeded", json!({"output_shape": "image_urls"})).await["output"].clone();
    assert_eq!(urls["image_urls"].as_array().unwrap().len(), 2);
    assert!(urls["image_urls"][0]
        .as_str()
        .unwrap()
        .contains("/0.jpg?expires="));
    assert!(urls.get("outputs").is_none());

    let images = finished("succeeded", json!({"output_shape": "images"})).await["output"].clone();
    assert_eq!(images["images"].as_array().unwrap().len(), 2);
    assert!(images["images"][1]["url"]
        .as_str()
        .unwrap()
        .contains("/1.jpg?"));
    assert_eq!(images["images"][1]["width"], 64);

    let image = finished("succeeded", json!({"output_shape": "image"})).await["output"].clone();
    assert!(image["image"]["url"].as_str().unwrap().contains("/0.jpg?"));
    assert!(image["seed"].is_u64());
}
