//! Routes and handlers. Errors are JSON `{error, code}` (plus `field` / `retry_after`), like the real server's.
use std::convert::Infallible;

use hyper::body::HttpBody;
use hyper::header::{
    HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Body, Method, Request, Response, StatusCode};
use serde_derive::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::{self, KeyCache, Org};
use crate::db::Pool;
use crate::queue::QueuedEvent;
use crate::rate_limit::RateLimiter;

const MAX_BODY_BYTES: usize = 1 << 20;
const MAX_STRING_CHARS: usize = 255;

pub struct State {
    pub db: Pool,
    pub keys: KeyCache,
    pub limits: RateLimiter,
    pub queue: mpsc::Sender<QueuedEvent>,
}

pub async fn handle(state: &State, req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let result = match (req.uri().path(), req.method()) {
        ("/api/events", &Method::POST) => ingest(state, req).await,
        ("/api/keys/generate", &Method::POST) => generate_key(state, req).await,
        ("/health", &Method::GET) => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        ("/api/events" | "/api/keys/generate" | "/health", _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This route does not accept that method.",
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such route.",
        )),
    };
    Ok(result.unwrap_or_else(ApiError::into_response))
}

#[derive(Deserialize)]
struct EventBody {
    #[serde(rename = "type")]
    event_type: String,
    payload: Value,
    dedup_id: Option<String>,
}

/// auth → validation → rate limit → queue, then 202 at once: the insert happens later, in a writer.
async fn ingest(state: &State, req: Request<Body>) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let org = authenticate(state, &parts.headers).await?;
    let body = read_body(&parts.headers, body).await?;
    let event: EventBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::validation(format!("The body is not a valid event: {e}.")))?;
    check_length(&event.event_type, "type")?;
    if !event.payload.is_object() {
        return Err(ApiError::validation("payload must be a JSON object.").with_field("payload"));
    }
    if let Some(dedup_id) = &event.dedup_id {
        check_length(dedup_id, "dedup_id")?;
    }
    state
        .limits
        .take(org.id, org.rate_limit_per_minute)
        .map_err(ApiError::rate_limited)?;

    let id = Uuid::new_v4();
    let queued = QueuedEvent {
        id,
        organization_id: org.id,
        event_type: event.event_type,
        payload: event.payload,
        dedup_id: event.dedup_id,
    };
    state.queue.try_send(queued).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "The in-memory queue is full; retry later.",
        )
    })?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"id": id.to_string(), "status": "accepted"}),
    ))
}

#[derive(Deserialize)]
struct GenerateKeyBody {
    organization_name: String,
    tier: Option<String>,
}

async fn generate_key(state: &State, req: Request<Body>) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body).await?;
    let request: GenerateKeyBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::validation(format!("The body is not valid: {e}.")))?;
    check_length(&request.organization_name, "organization_name")?;
    let tier = request.tier.unwrap_or_else(|| "free".to_owned());
    let rate_limit = auth::tier_limit(&tier).ok_or_else(|| {
        ApiError::validation("tier must be one of free, pro, business, enterprise.")
            .with_field("tier")
    })?;

    let organization_id = Uuid::new_v4();
    let api_key = auth::new_api_key();
    let created_at = state
        .db
        .insert_org(
            organization_id,
            &request.organization_name,
            &auth::key_digest(&api_key),
            &tier,
            rate_limit,
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "organization_id": organization_id.to_string(),
            "organization_name": request.organization_name,
            "api_key": api_key,
            "tier": tier,
            "rate_limit_per_minute": rate_limit,
            "created_at": created_at,
        }),
    ))
}

async fn authenticate(state: &State, headers: &HeaderMap) -> Result<Org, ApiError> {
    let api_key = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing_api_key",
                "Send your API key in the X-API-Key header.",
            )
        })?;
    state
        .keys
        .lookup(api_key, &state.db)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::unauthorized("invalid_api_key", "The API key is not valid."))
}

async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "The request body is over 1 MiB.",
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = body.data().await {
        let chunk =
            chunk.map_err(|_| ApiError::validation("The request body could not be read."))?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn check_length(value: &str, field: &'static str) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_STRING_CHARS {
        return Err(
            ApiError::validation(format!("{field} must be 1 to 255 characters.")).with_field(field),
        );
    }
    Ok(())
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(
        serde_json::to_vec(body).expect("a JSON value serializes"),
    ));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "validation_error", message)
    }

    fn unauthorized(code: &'static str, message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    fn rate_limited(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Rate limit exceeded for this organization.",
            )
        }
    }

    fn internal(error: tokio_postgres::Error) -> ApiError {
        eprintln!(
            "{}",
            json!({"msg": "database_error", "error": error.to_string()})
        );
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The database query failed.",
        )
    }

    fn with_field(mut self, field: &'static str) -> ApiError {
        self.field = Some(field);
        self
    }

    fn into_response(self) -> Response<Body> {
        let mut body = json!({"error": self.message, "code": self.code});
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        if let Some(seconds) = self.retry_after {
            body["retry_after"] = json!(seconds);
        }
        let mut response = json_response(self.status, &body);
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("ApiKey"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
