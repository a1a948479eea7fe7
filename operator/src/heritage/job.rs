//! The pure build of what a heritage request becomes: a RecordingJob recording the whole room
//! (every anchor, as the template did) and, when the request carries values that must stay
//! secret, a Secret that holds them. The job names that Secret and never holds a value itself.

use super::error::HeritageError;
use super::request::{HeritageRequest, Room};
use super::template::Template;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use roomrec_api::crd::{
    Callback, CosStorage, RecordingJob, RecordingJobSpec, RelayMode, SecretKeyRef, Source, Storage,
    TrtcSource,
};
use std::collections::BTreeMap;

/// The key of the recording identity's UserSig in the request's Secret (relay: existing).
pub const USER_SIG_KEY: &str = "userSig";

/// The request's Secret: named after the request id, so that a request that loses the race
/// for a job name deletes only its own.
pub fn secret_name(request_id: &str) -> String {
    format!("heritage-{request_id}")
}

/// The checks that need both the request and the template.
pub fn check(request: &HeritageRequest, template: &Template) -> Result<(), HeritageError> {
    if request.cos.keys.is_none() && template.storage_credentials_secret.is_none() {
        return Err(HeritageError::invalid(
            "CosConfig.SecretId",
            "is required: this deployment has no storage credentials of its own (no execution role); send CosConfig.SecretId and CosConfig.SecretKey",
        ));
    }
    Ok(())
}

/// The Secret with the request's secret values, or None when it has none to keep: the COS
/// keys (keys `secretId`, `secretKey`, as `spec.storage.cos.credentialsSecret` reads them)
/// and, with relay: existing, the UserSig (with relay: start it was verified and is dropped).
pub fn secret(
    request: &HeritageRequest,
    template: &Template,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    request_id: &str,
) -> Option<Secret> {
    let mut data = BTreeMap::new();
    if let Some(keys) = &request.cos.keys {
        data.insert("secretId".into(), keys.secret_id.expose().to_string());
        data.insert("secretKey".into(), keys.secret_key.expose().to_string());
    }
    if template.relay == RelayMode::Existing {
        data.insert(USER_SIG_KEY.into(), request.user_sig.expose().to_string());
    }
    if data.is_empty() {
        return None;
    }
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(request_id)),
            namespace: Some(namespace.into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        // Nothing ever changes it: its values live and die with the job.
        immutable: Some(true),
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}

/// The RecordingJob `name` for the request. `secret` is the name of the request's Secret, if
/// it has one.
pub fn recording_job(
    request: &HeritageRequest,
    template: &Template,
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    secret: Option<&str>,
) -> RecordingJob {
    let (room_id, str_room_id) = match &request.room {
        Room::Number(id) => (Some(*id), None),
        Room::Text(id) => (None, Some(id.clone())),
    };
    let user_sig_secret = match (template.relay, secret) {
        (RelayMode::Existing, Some(secret)) => Some(SecretKeyRef {
            name: secret.into(),
            key: USER_SIG_KEY.into(),
        }),
        _ => None,
    };
    let credentials_secret = match (&request.cos.keys, secret) {
        (Some(_), Some(secret)) => Some(secret.to_string()),
        _ => template.storage_credentials_secret.clone(),
    };
    let spec = RecordingJobSpec {
        source: Source {
            trtc: Some(TrtcSource {
                sdk_app_id: request.sdk_app_id,
                room_id,
                str_room_id,
                user_id: request.user_id.clone(),
                record: Vec::new(),
                whole_room: Some(template.whole_room.clone()),
                start_on: Default::default(),
                play_domain: template.play_domain.clone(),
                protocol: template.protocol,
                stream: Default::default(),
                legacy_biz_id: None,
                relay: template.relay,
                push_domain: template.push_domain.clone(),
                push_key_secret: template.push_key_secret.clone(),
                user_sig_secret,
                secret_key_secret: template.secret_key_secret.clone(),
            }),
            url: None,
        },
        mode: Some(request.mode),
        storage: Some(Storage {
            cos: Some(CosStorage {
                region: request.cos.region.clone(),
                bucket: request.cos.bucket.clone(),
                path: Some(request.cos.path.clone()).filter(|p| !p.is_empty()),
                credentials_secret,
                endpoint: template.cos_endpoint.clone(),
            }),
            ..Default::default()
        }),
        callback: request.callback.clone().map(|url| Callback {
            url,
            signing_secret: None,
        }),
        idle_timeout_seconds: template.idle_timeout_seconds,
        max_duration_seconds: None,
        segment: None,
        faststart: false,
        stop: false,
        worker: None,
    };
    let mut job = RecordingJob::new(name, spec);
    job.metadata.namespace = Some(namespace.into());
    job.metadata.labels = Some(labels.clone());
    job
}

#[cfg(test)]
mod tests {
    use super::super::request::{CosKeys, parse, tests::NOW, tests::sample};
    use super::*;
    use roomrec_api::trtc::tc3::Secret as Value;
    use serde_json::json;

    fn template(relay: &str) -> Template {
        let text = match relay {
            "start" => json!({"playDomain": "play.example.com", "relay": "start",
                "pushDomain": "push.example.com", "secretKeySecret": {"name": "app", "key": "key"},
                "storageCredentialsSecret": "cos-keys", "cosEndpoint": "http://localhost:9000"}),
            _ => json!({"playDomain": "play.example.com"}),
        };
        Template::parse(&text.to_string()).unwrap()
    }

    fn with_keys() -> HeritageRequest {
        let mut request = parse(sample().to_string().as_bytes(), NOW).unwrap();
        request.cos.keys = Some(CosKeys {
            secret_id: Value::new("AKIDEXAMPLE"),
            secret_key: Value::new("very-secret-key"),
        });
        request.callback = Some("https://lms.example.com/hooks".into());
        request
    }

    #[test]
    fn relay_existing_keeps_the_usersig_and_keys_in_the_secret_and_only_names_it() {
        let request = with_keys();
        let template = template("existing");
        let labels = BTreeMap::new();
        let secret = secret(&request, &template, "ns", &labels, "id-1").unwrap();
        let data = secret.string_data.clone().unwrap();
        assert_eq!(data["secretKey"], "very-secret-key");
        assert_eq!(data[USER_SIG_KEY], request.user_sig.expose());
        let name = secret.metadata.name.unwrap();
        let job = recording_job(
            &request,
            &template,
            "ns",
            "heritage-x-1",
            &labels,
            Some(&name),
        );
        let text = serde_json::to_string(&job).unwrap();
        for value in ["very-secret-key", "AKIDEXAMPLE", request.user_sig.expose()] {
            assert!(
                !text.contains(value),
                "the job holds a secret value: {text}"
            );
        }
        let trtc = job.spec.source.trtc.as_ref().unwrap();
        assert_eq!(trtc.user_sig_secret.as_ref().unwrap().name, name);
        assert!(trtc.whole_room.is_some() && trtc.record.is_empty());
        assert_eq!(trtc.room_id, Some(43474));
        let cos = job.spec.storage.as_ref().unwrap().cos.as_ref().unwrap();
        assert_eq!(cos.credentials_secret.as_deref(), Some(name.as_str()));
        assert_eq!(cos.path.as_deref(), Some("/trtc"));
        assert_eq!(
            job.spec.callback.as_ref().unwrap().url,
            "https://lms.example.com/hooks"
        );
        assert_eq!(job.spec.mode, Some(roomrec_api::Mode::AudioVideoMp4));
    }

    #[test]
    fn relay_start_drops_the_usersig_and_uses_the_deployments_keys_without_a_secret() {
        let request = parse(sample().to_string().as_bytes(), NOW).unwrap();
        let template = template("start");
        let labels = BTreeMap::new();
        assert!(check(&request, &template).is_ok());
        assert!(secret(&request, &template, "ns", &labels, "id").is_none());
        let job = recording_job(&request, &template, "ns", "heritage-x-1", &labels, None);
        let trtc = job.spec.source.trtc.as_ref().unwrap();
        assert_eq!(trtc.user_sig_secret, None);
        assert_eq!(trtc.secret_key_secret.as_ref().unwrap().name, "app");
        assert_eq!(trtc.push_domain.as_deref(), Some("push.example.com"));
        let cos = job.spec.storage.as_ref().unwrap().cos.as_ref().unwrap();
        assert_eq!(cos.credentials_secret.as_deref(), Some("cos-keys"));
        assert_eq!(cos.endpoint.as_deref(), Some("http://localhost:9000"));
    }

    #[test]
    fn without_keys_or_an_execution_role_the_request_must_bring_keys() {
        let request = parse(sample().to_string().as_bytes(), NOW).unwrap();
        match check(&request, &template("existing")) {
            Err(HeritageError::Invalid { field, .. }) => assert_eq!(field, "CosConfig.SecretId"),
            other => panic!("{other:?}"),
        }
        assert!(check(&with_keys(), &template("existing")).is_ok());
    }
}
