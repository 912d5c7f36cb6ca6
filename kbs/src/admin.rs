//! Admin API (Trustee-compatible paths and bodies), behind JWTs signed by a
//! configured admin key. No key configured: every call is refused.

use crate::error::ApiError;
use crate::metrics::inc;
use crate::server::{compile_resource_policy, Kbs};
use crate::storage::{Key, ResourcePath};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Check the caller's admin token: signature by a configured key, `exp` in
/// the future, `role` as configured.
fn authorize(kbs: &Kbs, headers: &HeaderMap) -> Result<(), ApiError> {
    let deny = |kind: &'static str, detail: &str| {
        inc(&kbs.metrics.admin_denied);
        ApiError::unauthorized(kind, detail.to_owned())
    };
    if kbs.admin_keys.is_empty() {
        return Err(deny(
            "AdminDisabled",
            "the admin API is closed: no admin public key is configured",
        ));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            deny(
                "AdminUnauthenticated",
                "missing `Authorization: Bearer <admin JWT>`",
            )
        })?;
    let now = coco_jose::now_secs();
    let mut last_err = None;
    for key in &kbs.admin_keys {
        match key.verify(token.trim(), now) {
            Ok(claims) => {
                if claims.get("role").and_then(Value::as_str)
                    != Some(kbs.config.admin.role.as_str())
                {
                    inc(&kbs.metrics.admin_denied);
                    return Err(ApiError::forbidden(
                        "AdminRole",
                        format!("token role is not `{}`", kbs.config.admin.role),
                    ));
                }
                inc(&kbs.metrics.admin_ok);
                return Ok(());
            }
            Err(e) => last_err = Some(e),
        }
    }
    let why = last_err.map(|e| e.to_string()).unwrap_or_default();
    Err(deny(
        "AdminUnauthenticated",
        &format!("admin token rejected: {why}"),
    ))
}

fn decode_policy(b64: &str) -> Result<String, ApiError> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64.trim().trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(b64.trim()))
        .map_err(|e| {
            ApiError::bad_request("MalformedRequest", format!("policy is not base64: {e}"))
        })?;
    String::from_utf8(raw)
        .map_err(|_| ApiError::bad_request("MalformedRequest", "policy is not UTF-8"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// `POST /kbs/v0/resource/<repo>/<type>/<tag>` with the raw resource as body.
pub async fn set_resource(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
    Path(path): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&kbs, &headers)?;
    let path = ResourcePath::parse(&path)?;
    let store = kbs.store.clone();
    let p = path.clone();
    blocking(move || {
        store
            .put(&Key::Resource(p), &body)
            .map_err(ApiError::internal)
    })
    .await?;
    tracing::info!(%path, "resource set");
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /kbs/v0/resource/<repo>/<type>/<tag>`.
pub async fn delete_resource(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&kbs, &headers)?;
    let path = ResourcePath::parse(&path)?;
    let store = kbs.store.clone();
    let p = path.clone();
    let existed =
        blocking(move || store.delete(&Key::Resource(p)).map_err(ApiError::internal)).await?;
    if !existed {
        return Err(ApiError::not_found(
            "ResourceNotFound",
            format!("no resource at {path}"),
        ));
    }
    tracing::info!(%path, "resource deleted");
    Ok(StatusCode::OK.into_response())
}

#[derive(Debug, Deserialize)]
struct PolicyBody {
    policy: String,
}

/// `POST /kbs/v0/resource-policy` `{"policy": base64url(rego)}`.
pub async fn set_resource_policy(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&kbs, &headers)?;
    let req: PolicyBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("MalformedRequest", e.to_string()))?;
    let rego = decode_policy(&req.policy)?;
    let compiled = compile_resource_policy(&rego)
        .map_err(|e| ApiError::bad_request("InvalidPolicy", e.to_string()))?;
    let store = kbs.store.clone();
    blocking(move || {
        store
            .put(&Key::ResourcePolicy, rego.as_bytes())
            .map_err(ApiError::internal)
    })
    .await?;
    *kbs.resource_policy
        .write()
        .unwrap_or_else(|e| e.into_inner()) = compiled;
    tracing::info!("resource policy set");
    Ok(StatusCode::OK.into_response())
}

/// `GET /kbs/v0/resource-policy` → `{"policy": base64url(rego)}`.
pub async fn get_resource_policy(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&kbs, &headers)?;
    let policy = kbs.resource_policy();
    let src = policy
        .sources()
        .first()
        .map(|(_, s)| s.as_str())
        .unwrap_or("");
    Ok(Json(serde_json::json!({
        "policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(src)
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct AttestationPolicyBody {
    policy_id: String,
    policy: String,
    #[serde(default = "rego", rename = "type")]
    kind: String,
}

fn rego() -> String {
    "rego".into()
}

/// `POST /kbs/v0/attestation-policy` `{"policy_id","policy":base64url,"type":"rego"}`.
pub async fn set_attestation_policy(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&kbs, &headers)?;
    let req: AttestationPolicyBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("MalformedRequest", e.to_string()))?;
    if req.kind != "rego" {
        return Err(ApiError::bad_request(
            "InvalidPolicy",
            format!("policy type `{}` is not supported (rego)", req.kind),
        ));
    }
    if !crate::storage::is_safe_segment(&req.policy_id) {
        return Err(ApiError::bad_request(
            "InvalidPolicy",
            "policy_id: letters, digits, '.', '_', '-', not starting with '.'",
        ));
    }
    let rego = decode_policy(&req.policy)?;
    let k = kbs.clone();
    blocking(move || {
        k.attestation
            .set_policy(&req.policy_id, &rego)
            .map_err(|e| match e {
                crate::attestation::AsError::Policy(p) => {
                    ApiError::bad_request("InvalidPolicy", p.to_string())
                }
                other => ApiError::internal(other),
            })
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /kbs/v0/attestation-policy/<id>` → `{"policy_id","policy":base64url}`
/// (modules concatenated for a multi-module built-in policy).
pub async fn get_attestation_policy(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&kbs, &headers)?;
    let modules = kbs.attestation.policy(&id).ok_or_else(|| {
        ApiError::not_found("PolicyNotFound", format!("no attestation policy `{id}`"))
    })?;
    let src: Vec<String> = modules.into_iter().map(|(_, s)| s).collect();
    Ok(Json(serde_json::json!({
        "policy_id": id,
        "policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(src.join("\n"))
    }))
    .into_response())
}

/// Body of `POST /kbs/v0/reference-value`: Trustee's RVPS message
/// `{"version":"0.1.0","type":"sample","payload": base64(JSON name → value)}`
/// as Trustee's kbs-client sends it (`tools/kbs-client/src/lib.rs` @78962cd;
/// captured in `testdata/peers/trustee-client/admin-requests.json`), or,
/// directly, a JSON object of name → value. Values are kept as given
/// (Trustee's sample extractor does the same: a list of accepted values, or
/// one value with `--as-single-value`).
fn parse_reference_values(body: &[u8]) -> Result<BTreeMap<String, Value>, ApiError> {
    let bad = |why: String| ApiError::bad_request("MalformedRequest", why);
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let map = match (v.get("type"), v.get("payload")) {
        (Some(Value::String(t)), Some(Value::String(p))) => {
            if t != "sample" {
                return Err(bad(format!(
                    "reference value message type `{t}` is not supported (sample)"
                )));
            }
            let text = base64::engine::general_purpose::STANDARD
                .decode(p.trim())
                .map_err(|e| bad(format!("payload is not base64: {e}")))?;
            serde_json::from_slice::<Value>(&text)
                .map_err(|e| bad(format!("payload is not JSON: {e}")))?
        }
        _ => v,
    };
    let Value::Object(obj) = map else {
        return Err(bad(
            "reference values must be an object of name → value(s)".into()
        ));
    };
    let mut out = BTreeMap::new();
    for (name, val) in obj {
        if !crate::storage::is_safe_segment(&name) {
            return Err(bad(format!(
                "reference value name `{name}`: letters, digits, '.', '_', '-'"
            )));
        }
        if val.is_null() {
            return Err(bad(format!("{name}: null is not a reference value")));
        }
        out.insert(name, val);
    }
    Ok(out)
}

/// `POST /kbs/v0/reference-value`.
pub async fn set_reference_value(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&kbs, &headers)?;
    let values = parse_reference_values(&body)?;
    let names: Vec<String> = values.keys().cloned().collect();
    let k = kbs.clone();
    blocking(move || {
        k.attestation
            .set_reference_values(values)
            .map_err(ApiError::internal)
    })
    .await?;
    tracing::info!(?names, "reference values set");
    Ok(StatusCode::OK.into_response())
}

/// `GET /kbs/v0/reference-value/<id>` → the value registered under `id`, as
/// JSON (Trustee's KBS: `kbs/src/api_server.rs` @78962cd).
pub async fn get_reference_value(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&kbs, &headers)?;
    let value = kbs.attestation.reference_value(&id).ok_or_else(|| {
        ApiError::not_found(
            "ReferenceValueNotFound",
            format!("no reference value `{id}`"),
        )
    })?;
    Ok(Json(value).into_response())
}

/// `GET /kbs/v0/reference-value` → all reference values.
pub async fn get_reference_values(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&kbs, &headers)?;
    Ok(Json(kbs.attestation.reference_values()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values_in_both_shapes() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD
            .encode(br#"{"svn":["1","2"],"major_version":1,"debug":[false]}"#);
        let rvps = serde_json::json!({"version":"0.1.0","type":"sample","payload": payload});
        let m = parse_reference_values(rvps.to_string().as_bytes()).unwrap();
        assert_eq!(m["svn"], serde_json::json!(["1", "2"]));
        assert_eq!(m["major_version"], serde_json::json!(1));
        assert_eq!(m["debug"], serde_json::json!([false]));
        let plain = br#"{"tpm_pcr08": ["00"], "n": 3}"#;
        let m = parse_reference_values(plain).unwrap();
        assert_eq!(m["n"], serde_json::json!(3));
        assert!(parse_reference_values(b"[1]").is_err());
        assert!(parse_reference_values(br#"{"type":"x","payload":"e30="}"#).is_err());
        // The payload is base64 of JSON, not JSON (Trustee's sample extractor).
        assert!(
            parse_reference_values(br#"{"type":"sample","payload":"{\"svn\":[\"1\"]}"}"#).is_err()
        );
        assert!(parse_reference_values(br#"{"../x":[1]}"#).is_err());
        assert!(parse_reference_values(br#"{"a":null}"#).is_err());
    }

    /// The request Trustee's kbs-client sent for `set-sample-reference-value svn 1`.
    #[test]
    fn trustee_kbs_client_capture_parses() {
        let cap: Value = serde_json::from_str(include_str!(
            "../testdata/peers/trustee-client/admin-requests.json"
        ))
        .unwrap();
        let body = cap["set_sample_reference_value_request"].to_string();
        let m = parse_reference_values(body.as_bytes()).unwrap();
        assert_eq!(m["svn"], serde_json::json!(["1"]));
    }
}
