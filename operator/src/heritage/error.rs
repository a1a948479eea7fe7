//! The heritage API's one error type. Each variant knows its HTTP status, the field it names
//! (the client's to fix) and its `roomrec_heritage_requests_total{result}` label, so a refusal
//! is answered, counted and logged the same way. No message ever holds a secret value.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum HeritageError {
    /// A start-up setting (a flag, or a field of `--heritage-template`) is wrong.
    #[error("{field}: {message}")]
    Config { field: String, message: String },
    /// A request field (or the body, or a header) is missing or wrong: 400 naming it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// An Idempotency-Key already used for a recording of another room or identity: 422.
    #[error("Idempotency-Key was used before for another recording ({job})")]
    KeyReused { job: String },
    /// No bearer token, or another one: 401.
    #[error("send the heritage API token as Authorization: Bearer <token>")]
    Unauthorized,
    /// The body is over the limit: 413.
    #[error("the body is over {limit} bytes")]
    TooLarge { limit: usize },
    /// No recording has this request id: 404.
    #[error("no recording has request id {0:?}")]
    NotFound(String),
    /// A path the API does not serve: 404.
    #[error("no such path: POST / or /recordings, GET or DELETE /recordings/{{request id}}")]
    NoRoute,
    /// A known path with another method: 405.
    #[error("{path} takes {allowed}")]
    Method {
        path: &'static str,
        allowed: &'static str,
    },
    /// The operator's own setup is incomplete (a Secret the template names): 500.
    #[error("the heritage API is not set up completely: {0}")]
    Setup(String),
    /// The API server refused or failed: 503, the client may try again.
    #[error("{what} failed: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Every value `HeritageError::result` and the successful answers count as (metric series
/// exist from the start).
pub const RESULTS: [&str; 9] = [
    "created",
    "existing",
    "status",
    "stopped",
    "not-found",
    "refused-token",
    "refused-invalid",
    "refused-too-large",
    "failed",
];

impl HeritageError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        HeritageError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        HeritageError::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| HeritageError::Api { what, source }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HeritageError::Invalid { .. } => StatusCode::BAD_REQUEST,
            HeritageError::KeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            HeritageError::Unauthorized => StatusCode::UNAUTHORIZED,
            HeritageError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HeritageError::NotFound(_) | HeritageError::NoRoute => StatusCode::NOT_FOUND,
            HeritageError::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            HeritageError::Config { .. } | HeritageError::Setup(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            HeritageError::Api { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `result` label of `roomrec_heritage_requests_total` (one of `RESULTS`).
    pub fn result(&self) -> &'static str {
        match self {
            HeritageError::Invalid { .. }
            | HeritageError::KeyReused { .. }
            | HeritageError::Method { .. } => "refused-invalid",
            HeritageError::Unauthorized => "refused-token",
            HeritageError::TooLarge { .. } => "refused-too-large",
            HeritageError::NotFound(_) | HeritageError::NoRoute => "not-found",
            HeritageError::Config { .. } | HeritageError::Setup(_) | HeritageError::Api { .. } => {
                "failed"
            }
        }
    }

    /// The field the client should look at, if one is to blame.
    pub fn field(&self) -> Option<&str> {
        match self {
            HeritageError::Invalid { field, .. } => Some(field),
            HeritageError::KeyReused { .. } => Some("Idempotency-Key"),
            HeritageError::Unauthorized => Some("Authorization"),
            HeritageError::TooLarge { .. } => Some("Body"),
            HeritageError::NotFound(_) => Some("RequestId"),
            _ => None,
        }
    }

    /// What the client is told: the field alone, without repeating it in the message.
    fn message(&self) -> String {
        match self {
            HeritageError::Invalid { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// `{"Error": {"Field": …, "Message": …}}` with the status (and `Allow` for a 405).
    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut error = json!({ "Message": self.message() });
        if let Some(field) = self.field() {
            error["Field"] = json!(field);
        }
        let mut response = Response::builder()
            .status(self.status())
            .header("Content-Type", "application/json");
        if let HeritageError::Unauthorized = self {
            response = response.header("WWW-Authenticate", "Bearer");
        }
        if let HeritageError::Method { allowed, .. } = self {
            response = response.header("Allow", *allowed);
        }
        response
            .body(Full::new(Bytes::from(
                json!({ "Error": error }).to_string(),
            )))
            .expect("a valid response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(error: HeritageError) -> (StatusCode, serde_json::Value) {
        let response = error.response();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_field_error_names_the_field_and_gives_the_message_alone() {
        let (status, body) = body_of(HeritageError::invalid(
            "CosConfig.Bucket",
            "must end in the APPID, e.g. test-1250000000",
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"Error": {"Field": "CosConfig.Bucket",
                             "Message": "must end in the APPID, e.g. test-1250000000"}})
        );
    }

    #[test]
    fn every_error_counts_as_one_of_the_bounded_results() {
        let errors = [
            HeritageError::invalid("UserId", "x"),
            HeritageError::config("--heritage-template", "x"),
            HeritageError::KeyReused { job: "j".into() },
            HeritageError::Unauthorized,
            HeritageError::TooLarge { limit: 1 },
            HeritageError::NotFound("x".into()),
            HeritageError::NoRoute,
            HeritageError::Method {
                path: "/",
                allowed: "POST",
            },
            HeritageError::Setup("x".into()),
        ];
        for error in errors {
            assert!(RESULTS.contains(&error.result()), "{error:?}");
        }
    }
}
