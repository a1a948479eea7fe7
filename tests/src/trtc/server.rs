//! The stand-in's HTTP server: the TRTC API at `POST /` and the CSS push server's `on_publish`
//! check at `POST /css/on_publish` (called by its nginx-rtmp).

use super::Shared;
use super::check::HttpRequest;
use super::model::{ApiRequest, PublishCheck, apply, unix_now};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use roomrec_api::trtc::push_auth;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves connections until aborted (aborting ends the open connections too).
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, request).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

fn json_response(body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn status(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::from(text.to_string())))
        .expect("a valid response")
}

async fn handle(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return status(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
    };
    if parts.uri.path() == "/css/on_publish" {
        return on_publish(shared, &body);
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let action = parts
        .headers
        .get("X-TC-Action")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let request = HttpRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
    };
    let checked = shared.checker.check(&request, unix_now());
    let mut world = shared.lock();
    let request_id = world.request_id();
    let verified = checked.is_ok();
    let outcome = match checked {
        Ok(checked) => apply(shared, &mut world, checked.call),
        Err(refusal) => Err(refusal),
    };
    let answer = match &outcome {
        Ok(fields) => {
            let mut fields = fields.clone();
            fields["RequestId"] = json!(request_id);
            json!({ "Response": fields })
        }
        Err(refusal) => json!({
            "Response": {
                "Error": { "Code": refusal.code, "Message": refusal.message },
                "RequestId": request_id,
            }
        }),
    };
    world.requests.push(ApiRequest {
        request_id,
        action,
        body: String::from_utf8_lossy(&body).into_owned(),
        params: serde_json::from_slice(&body).ok(),
        verified,
        outcome,
    });
    json_response(&answer)
}

/// nginx-rtmp's `on_publish`: a form (`application/x-www-form-urlencoded`) with `call=publish`,
/// `app`, `name` (the stream name, escaped), `type`, `addr`, `clientid`, `tcurl`, `flashver`,
/// `swfurl`, `pageurl`, and then the push URL's own query string appended as it was sent
/// (`txSecret=…&txTime=…`). 2xx lets the push go on; anything else makes nginx drop it.
fn on_publish(shared: &Shared, body: &[u8]) -> Response<Full<Bytes>> {
    let text = String::from_utf8_lossy(body);
    let form: Vec<(String, String)> = text
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            // nginx escapes `name` once (the URL's own escapes become %25..); `+` stays a plus.
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(name), decode(value))
        })
        .collect();
    let first = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let count = |name: &str| form.iter().filter(|(n, _)| n == name).count();
    let stream = first("name").unwrap_or_default().to_string();
    let verdict = match (&shared.push_key, first("call"), first("app")) {
        (_, call, _) if call != Some("publish") => Err(format!("call {call:?} is not publish")),
        (_, _, app) if app != Some("live") => Err(format!("app {app:?} is not live")),
        (None, _, _) => Ok(()),
        (Some(key), _, _) => {
            if count("txSecret") > 1 || count("txTime") > 1 {
                Err("the push URL repeats txSecret or txTime".to_string())
            } else {
                match (first("txSecret"), first("txTime")) {
                    (None, _) => {
                        Err(push_auth::PushAuthError::MissingParameter("txSecret").to_string())
                    }
                    (_, None) => {
                        Err(push_auth::PushAuthError::MissingParameter("txTime").to_string())
                    }
                    (Some(secret), Some(time)) => {
                        push_auth::verify(key, &stream, secret, time, unix_now())
                            .map_err(|e| e.to_string())
                    }
                }
            }
        }
    };
    let accepted = verdict.is_ok();
    shared.lock().publish_checks.push(PublishCheck {
        stream,
        form,
        accepted,
        reason: verdict.err(),
    });
    if accepted {
        status(StatusCode::OK, "")
    } else {
        status(StatusCode::FORBIDDEN, "")
    }
}
