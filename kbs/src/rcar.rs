//! RCAR: `/auth` → nonce, `/attest` → token, `/resource` → JWE.

use crate::error::ApiError;
use crate::metrics::inc;
use crate::server::Kbs;
use crate::session::SessionError;
use crate::storage::{Key, ResourcePath};
use crate::verifier::Expected;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use coco_jose::keys::TeePublicKey;
use kbs_types::{Attestation, Challenge, Request};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The one protocol version we speak (kbs-types 0.18).
pub const PROTOCOL_VERSION: &str = "0.4.0";
pub const SESSION_COOKIE: &str = "kbs-session-id";

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("MalformedRequest", format!("{what}: {e}")))
}

/// The session cookie's value, if any.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `POST /kbs/v0/auth`: start a session and hand out a fresh nonce.
pub async fn auth(
    State(kbs): State<Arc<Kbs>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !kbs.limiter.allow(peer.ip()) {
        inc(&kbs.metrics.auth_throttled);
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many /auth calls from this address; slow down",
        ));
    }
    let result = auth_inner(&kbs, &body);
    if result.is_err() {
        inc(&kbs.metrics.auth_rejected);
    }
    result
}

fn auth_inner(kbs: &Kbs, body: &[u8]) -> Result<Response, ApiError> {
    let req: Request = parse_json("auth request", body)?;
    if req.version != PROTOCOL_VERSION {
        return Err(ApiError::bad_request(
            "ProtocolVersion",
            format!(
                "protocol version `{}` is not supported; this KBS speaks {PROTOCOL_VERSION}",
                req.version
            ),
        ));
    }
    kbs.attestation_supports(req.tee)?;
    let extra_params = negotiate_hash(&req.extra_params)?;
    let id = hex::encode(coco_jose::random_bytes::<16>());
    let nonce = base64::engine::general_purpose::STANDARD.encode(coco_jose::random_bytes::<32>());
    kbs.sessions
        .create(id.clone(), req.tee, nonce.clone())
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "SessionsFull",
                e.to_string(),
            )
        })?;
    inc(&kbs.metrics.auth_ok);
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/kbs; Max-Age={}; HttpOnly{}",
        kbs.config.session.ttl_secs,
        if kbs.config.tls.is_some() {
            "; Secure"
        } else {
            ""
        }
    );
    let challenge = Challenge {
        nonce,
        extra_params,
    };
    let mut resp = Json(challenge).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(resp)
}

/// `extra-params.supported-hash-algorithms` of `/auth`, as guest-components'
/// client sends it (`rcar_client.rs` @da8d93f): the binding is SHA-384 (see
/// `coco_jose::binding`), so a client that cannot do SHA-384 is told so now
/// instead of failing at `/attest`, and a client that offered algorithms is told
/// the one chosen (`selected-hash-algorithm`). No offer: `{}`, SHA-384 implied.
fn negotiate_hash(extra: &Value) -> Result<Value, ApiError> {
    use coco_jose::binding::{
        BINDING_HASH_ALGORITHM, SELECTED_HASH_ALGORITHM, SUPPORTED_HASH_ALGORITHMS,
    };
    let Some(offer) = extra.get(SUPPORTED_HASH_ALGORITHMS) else {
        return Ok(json!({}));
    };
    let Some(list) = offer.as_array() else {
        return Err(ApiError::bad_request(
            "MalformedRequest",
            format!("extra-params.{SUPPORTED_HASH_ALGORITHMS} must be an array of names"),
        ));
    };
    if !list
        .iter()
        .filter_map(Value::as_str)
        .any(|a| a.eq_ignore_ascii_case(BINDING_HASH_ALGORITHM))
    {
        return Err(ApiError::bad_request(
            "UnsupportedHashAlgorithm",
            format!(
                "this KBS binds evidence with {BINDING_HASH_ALGORITHM}; the client offered {offer}"
            ),
        ));
    }
    Ok(json!({ SELECTED_HASH_ALGORITHM: BINDING_HASH_ALGORITHM }))
}

impl Kbs {
    fn attestation_supports(&self, tee: kbs_types::Tee) -> Result<(), ApiError> {
        self.attestation
            .supports(tee)
            .map_err(|e| ApiError::bad_request("UnsupportedTee", e.to_string()))
    }
}

/// `POST /kbs/v0/attest`: verify evidence bound to this session's nonce.
pub async fn attest(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let id = session_id(&headers).ok_or_else(|| {
        ApiError::unauthorized(
            "MissingCookie",
            "no kbs-session-id cookie; call /auth first",
        )
    })?;
    let result = attest_inner(kbs.clone(), &id, body).await;
    match &result {
        Ok(_) => inc(&kbs.metrics.attest_ok),
        Err(e) => {
            inc(&kbs.metrics.attest_failed);
            tracing::info!(session = %id, kind = e.kind, detail = %e.detail, "attestation refused");
        }
    }
    kbs.metrics.attest_duration.observe(started.elapsed());
    result
}

async fn attest_inner(kbs: Arc<Kbs>, id: &str, body: Bytes) -> Result<Response, ApiError> {
    // Take the nonce first: whatever happens next, it is never accepted twice.
    let (tee, nonce) = kbs.sessions.begin_attest(id).map_err(|e| match e {
        SessionError::AlreadyAttested => ApiError::unauthorized("NonceReused", e.to_string()),
        _ => ApiError::unauthorized("InvalidSession", e.to_string()),
    })?;
    let outcome = appraise(&kbs, tee, &nonce, &body).await;
    match outcome {
        Ok(token) => {
            kbs.sessions
                .finish_attest(id, token.clone(), kbs.tokens.ttl());
            Ok(Json(json!({ "token": token })).into_response())
        }
        Err(e) => {
            kbs.sessions.remove(id);
            Err(e)
        }
    }
}

async fn appraise(
    kbs: &Arc<Kbs>,
    tee: kbs_types::Tee,
    nonce: &str,
    body: &[u8],
) -> Result<String, ApiError> {
    let att: Attestation = parse_json("attestation", body)?;
    if att.runtime_data.nonce != nonce {
        return Err(ApiError::unauthorized(
            "InvalidNonce",
            "runtime_data.nonce is not this session's nonce",
        ));
    }
    TeePublicKey::from_jwk(&att.runtime_data.tee_pubkey)
        .map_err(|e| ApiError::bad_request("InvalidTeePubKey", e.to_string()))?;
    let report_data = coco_jose::binding::runtime_data_hash(
        nonce,
        &att.runtime_data.tee_pubkey,
        &att.tee_evidence.additional_evidence,
    )
    .map_err(|e| ApiError::bad_request("MalformedRequest", e.to_string()))?;
    let init_data = match &att.init_data {
        Some(i) => Some(
            coco_jose::binding::parse_init_data(&i.format, &i.body)
                .map_err(|e| ApiError::bad_request("InvalidInitData", e.to_string()))?,
        ),
        None => None,
    };
    let init_json = init_data.as_ref().map(crate::attestation::init_data_input);

    let evidence = att.tee_evidence.primary_evidence;
    let verdict = {
        let kbs = kbs.clone();
        let init_json = init_json.clone();
        tokio::task::spawn_blocking(move || {
            let expected = Expected {
                report_data,
                init_data_digest: init_data.as_ref().map(|d| d.digest.as_slice()),
            };
            kbs.attestation
                .appraise(tee, &evidence, &expected, init_json.as_ref())
        })
        .await
        .map_err(ApiError::internal)?
    }
    .map_err(|e| match e {
        crate::attestation::AsError::Verifier(v) => {
            ApiError::unauthorized("EvidenceRejected", v.to_string())
        }
        other => ApiError::internal(other),
    })?;

    let tee_name = tee.to_string();
    kbs.tokens
        .issue(&crate::token::Appraisal {
            tee: &tee_name,
            status: &verdict.status,
            claims: verdict.claims,
            trust_vector: verdict.trust_vector,
            tee_pubkey: &att.runtime_data.tee_pubkey,
            init_data: init_json,
        })
        .map_err(ApiError::internal)
}

/// The verified token of the caller: `Authorization: Bearer` or the session.
fn caller_claims(kbs: &Kbs, headers: &HeaderMap) -> Result<Value, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = match bearer {
        Some(t) => t.trim().to_owned(),
        None => {
            let id = session_id(headers).ok_or_else(|| {
                ApiError::unauthorized(
                    "Unauthenticated",
                    "attest first: no bearer token and no session cookie",
                )
            })?;
            kbs.sessions
                .token(&id)
                .map_err(|e| ApiError::unauthorized("InvalidSession", e.to_string()))?
        }
    };
    kbs.tokens
        .verify(&token)
        .map_err(|e| ApiError::unauthorized("InvalidToken", e.to_string()))
}

/// The resource policy's `data`, in the shape Trustee's KBS gives it
/// (`kbs/src/api_server.rs` @78962cd): the plugin name, the path after the
/// plugin as an array of segments, and the query parameters.
pub fn resource_policy_data(path: &ResourcePath, query: &BTreeMap<String, String>) -> Value {
    json!({
        "plugin": "resource",
        "resource-path": [path.repo, path.kind, path.tag],
        "query": query,
    })
}

/// `GET /kbs/v0/resource/<repo>/<type>/<tag>`: policy check, then the
/// resource as JWE to the key in the caller's token.
pub async fn resource(
    State(kbs): State<Arc<Kbs>>,
    headers: HeaderMap,
    Path(path): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = ResourcePath::parse(&path)?;
    let claims = caller_claims(&kbs, &headers)?;
    let data = resource_policy_data(&path, &query);
    let allowed = kbs
        .resource_policy()
        .allows("data.policy.allow", &claims, Some(&data))
        .map_err(ApiError::internal)?;
    if !allowed {
        inc(&kbs.metrics.resource_denied);
        // 401, as Trustee's KBS answers a denial (`kbs/src/error.rs` @78962cd:
        // everything but 404 is 401): its clients handle only 200/401/404,
        // and on 401 they attest again and retry, then report "unauthorized".
        // A 403 would reach their users as "KBS internal error".
        return Err(ApiError::unauthorized(
            "PolicyDeny",
            format!("the resource policy does not release {path} to this attestation"),
        ));
    }
    let pubkey: kbs_types::TeePubKey = serde_json::from_value(claims["tee-pubkey"].clone())
        .map_err(|e| ApiError::unauthorized("InvalidToken", format!("tee-pubkey: {e}")))?;
    let pubkey = TeePublicKey::from_jwk(&pubkey)
        .map_err(|e| ApiError::unauthorized("InvalidToken", e.to_string()))?;
    let store = kbs.store.clone();
    let key = Key::Resource(path.clone());
    let value = tokio::task::spawn_blocking(move || store.get(&key))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("ResourceNotFound", format!("no resource at {path}")))?;
    let jwe = coco_jose::jwe::encrypt(&pubkey, &value).map_err(ApiError::internal)?;
    inc(&kbs.metrics.resource_released);
    tracing::info!(%path, "resource released");
    Ok(Json(jwe).into_response())
}
