//! `--heritage-template`: what the operator decides for every job the heritage API creates
//! (where the anchors' streams are played from, who starts the relay, the storage credentials
//! when a request brings none), as JSON. Checked whole at start-up: a mistake stops the operator
//! with the field's name instead of failing each request later.

use super::error::HeritageError;
use super::rules;
use roomrec_api::crd::{PlayProtocol, RelayMode, SecretKeyRef, WholeRoom};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

const FLAG: &str = "--heritage-template";
const FIELDS: [&str; 10] = [
    "playDomain",
    "protocol",
    "relay",
    "pushDomain",
    "pushKeySecret",
    "secretKeySecret",
    "wholeRoom",
    "idleTimeoutSeconds",
    "storageCredentialsSecret",
    "cosEndpoint",
];

/// The operator's choices for heritage jobs; the request brings the room, identity, mode,
/// storage place and callback. Secrets it names are in the heritage namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    /// `spec.source.trtc.playDomain`: where the anchors' streams play (required).
    pub play_domain: String,
    /// `spec.source.trtc.protocol` (rtmp, flv, hls).
    pub protocol: PlayProtocol,
    /// `existing`: the application's relay to CDN (the request's UserSig is kept in the job's
    /// Secret as `userSigSecret`); `start`: roomrec starts a relay per anchor (the UserSig is
    /// verified with `secretKeySecret` and not kept).
    pub relay: RelayMode,
    /// relay: start only: the CSS push domain.
    pub push_domain: Option<String>,
    /// relay: start only: the push domain's authentication key.
    pub push_key_secret: Option<SecretKeyRef>,
    /// relay: start only (and required there): the application's secret key.
    pub secret_key_secret: Option<SecretKeyRef>,
    /// `spec.source.trtc.wholeRoom`: heritage jobs record every anchor, as the template did.
    pub whole_room: WholeRoom,
    /// `spec.idleTimeoutSeconds`; unset: the operator's default.
    pub idle_timeout_seconds: Option<u32>,
    /// A Secret with `secretId` and `secretKey` for requests without `CosConfig.SecretId`/
    /// `SecretKey` (the template's execution role); unset: requests must bring their keys.
    pub storage_credentials_secret: Option<String>,
    /// `spec.storage.cos.endpoint`: a private COS endpoint (or, in tests, a stand-in).
    pub cos_endpoint: Option<String>,
}

/// clap's value parser for `--heritage-template`.
pub fn parse_flag(text: &str) -> Result<Template, String> {
    Template::parse(text).map_err(|e| e.to_string())
}

impl Template {
    /// The JSON of a template, checked: errors name `--heritage-template` and the field.
    pub fn parse(text: &str) -> Result<Template, HeritageError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            HeritageError::config(
                FLAG,
                format!("is not JSON ({e}): e.g. {{\"playDomain\": \"play.example.com\"}}"),
            )
        })?;
        let fields = only_known(&value, FLAG, &FIELDS)?;
        let template = Template {
            play_domain: field(fields, "playDomain")?.ok_or_else(|| {
                invalid(
                    "playDomain",
                    "is required: the playback domain the anchors' streams play from",
                )
            })?,
            protocol: field(fields, "protocol")?.unwrap_or_default(),
            relay: field(fields, "relay")?.unwrap_or_default(),
            push_domain: field(fields, "pushDomain")?,
            push_key_secret: secret_key_ref(fields, "pushKeySecret")?,
            secret_key_secret: secret_key_ref(fields, "secretKeySecret")?,
            whole_room: match fields.get("wholeRoom") {
                Some(value) => {
                    only_known(value, &path("wholeRoom"), &["screenShare", "maxPeople"])?;
                    field(fields, "wholeRoom")?.unwrap_or_default()
                }
                None => WholeRoom::default(),
            },
            idle_timeout_seconds: field(fields, "idleTimeoutSeconds")?,
            storage_credentials_secret: field(fields, "storageCredentialsSecret")?,
            cos_endpoint: field(fields, "cosEndpoint")?,
        };
        template.check()?;
        Ok(template)
    }

    fn check(&self) -> Result<(), HeritageError> {
        let rule = |name: &str, verdict: Result<(), String>| {
            verdict.map_err(|message| invalid(name, &message))
        };
        rule("playDomain", rules::domain(&self.play_domain))?;
        if let Some(domain) = &self.push_domain {
            rule("pushDomain", rules::domain(domain))?;
        }
        match self.relay {
            RelayMode::Start => {
                if self.push_domain.is_none() {
                    return Err(invalid(
                        "pushDomain",
                        "is required with relay: start (the CSS push domain the relays push to)",
                    ));
                }
                if self.secret_key_secret.is_none() {
                    return Err(invalid(
                        "secretKeySecret",
                        "is required with relay: start: a whole room needs an agent per anchor, whose UserSigs roomrec makes from the application's key (and checks each request's UserSig with it)",
                    ));
                }
            }
            RelayMode::Existing => {
                for (name, set) in [
                    ("pushDomain", self.push_domain.is_some()),
                    ("pushKeySecret", self.push_key_secret.is_some()),
                    ("secretKeySecret", self.secret_key_secret.is_some()),
                ] {
                    if set {
                        return Err(invalid(
                            name,
                            "is only for relay: start; with relay: existing the application's relay to CDN is played from playDomain",
                        ));
                    }
                }
            }
        }
        if let Some(max) = self.whole_room.max_people
            && !(1..=256).contains(&max)
        {
            return Err(invalid("wholeRoom.maxPeople", "must be between 1 and 256"));
        }
        if let Some(seconds) = self.idle_timeout_seconds
            && !(5..=86400).contains(&seconds)
        {
            return Err(invalid(
                "idleTimeoutSeconds",
                "must be between 5 and 86400 (one day)",
            ));
        }
        if let Some(name) = &self.storage_credentials_secret {
            rule("storageCredentialsSecret", rules::secret_part(name))?;
        }
        if let Some(endpoint) = &self.cos_endpoint {
            rule("cosEndpoint", rules::endpoint(endpoint))?;
        }
        Ok(())
    }
}

fn path(name: &str) -> String {
    format!("{FLAG} {name}")
}

fn invalid(name: &str, message: &str) -> HeritageError {
    HeritageError::config(path(name), message)
}

/// `value` as an object with only `known` keys (a misspelt key is not dropped in silence).
fn only_known<'a>(
    value: &'a Value,
    name: &str,
    known: &[&str],
) -> Result<&'a Map<String, Value>, HeritageError> {
    let object = value
        .as_object()
        .ok_or_else(|| HeritageError::config(name, "must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(HeritageError::config(
            format!("{name} {unknown}"),
            format!(
                "is not a template field; the fields are {}",
                known.join(", ")
            ),
        ));
    }
    Ok(object)
}

/// One field, deserialized on its own so that a wrong type names it.
fn field<T: DeserializeOwned>(
    fields: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>, HeritageError> {
    fields
        .get(name)
        .filter(|v| !v.is_null())
        .map(|value| {
            T::deserialize(value).map_err(|e| HeritageError::config(path(name), e.to_string()))
        })
        .transpose()
}

fn secret_key_ref(
    fields: &Map<String, Value>,
    name: &str,
) -> Result<Option<SecretKeyRef>, HeritageError> {
    if let Some(value) = fields.get(name) {
        only_known(value, &path(name), &["name", "key"])?;
    }
    let reference: Option<SecretKeyRef> = field(fields, name)?;
    if let Some(r) = &reference {
        for (part, text) in [("name", &r.name), ("key", &r.key)] {
            rules::secret_part(text)
                .map_err(|message| invalid(&format!("{name}.{part}"), &message))?;
        }
    }
    Ok(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        match Template::parse(text) {
            Err(HeritageError::Config { field, .. }) => field,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_relay_start_template_reads_every_field() {
        let template = Template::parse(
            r#"{"playDomain": "play.example.com", "protocol": "flv", "relay": "start",
                "pushDomain": "push.example.com", "pushKeySecret": {"name": "css", "key": "key"},
                "secretKeySecret": {"name": "trtc-app", "key": "key"},
                "wholeRoom": {"screenShare": true, "maxPeople": 8}, "idleTimeoutSeconds": 60,
                "storageCredentialsSecret": "cos-keys", "cosEndpoint": "http://localhost:9000"}"#,
        )
        .unwrap();
        assert_eq!(template.relay, RelayMode::Start);
        assert_eq!(template.protocol, PlayProtocol::Flv);
        assert!(template.whole_room.screen_share);
        assert_eq!(template.whole_room.max_people, Some(8));
        assert_eq!(template.secret_key_secret.unwrap().name, "trtc-app");
        assert_eq!(template.idle_timeout_seconds, Some(60));
    }

    #[test]
    fn the_smallest_template_plays_the_existing_relay_of_every_anchor() {
        let template = Template::parse(r#"{"playDomain": "play.example.com"}"#).unwrap();
        assert_eq!(template.relay, RelayMode::Existing);
        assert_eq!(template.whole_room, WholeRoom::default());
        assert_eq!(template.storage_credentials_secret, None);
    }

    #[test]
    fn each_mistake_names_the_flag_and_the_field() {
        for (text, field) in [
            ("[]", "--heritage-template"),
            ("{", "--heritage-template"),
            ("{}", "--heritage-template playDomain"),
            (
                r#"{"playDomain": "rtmp://x"}"#,
                "--heritage-template playDomain",
            ),
            (
                r#"{"playDomain": "p", "playdomain": "p"}"#,
                "--heritage-template playdomain",
            ),
            (
                r#"{"playDomain": "p", "protocol": "rtsp"}"#,
                "--heritage-template protocol",
            ),
            (
                r#"{"playDomain": "p", "relay": "start", "secretKeySecret": {"name": "k", "key": "k"}}"#,
                "--heritage-template pushDomain",
            ),
            (
                r#"{"playDomain": "p", "relay": "start", "pushDomain": "q"}"#,
                "--heritage-template secretKeySecret",
            ),
            (
                r#"{"playDomain": "p", "pushDomain": "q"}"#,
                "--heritage-template pushDomain",
            ),
            (
                r#"{"playDomain": "p", "wholeRoom": {"maxPeople": 0}}"#,
                "--heritage-template wholeRoom.maxPeople",
            ),
            (
                r#"{"playDomain": "p", "wholeRoom": {"screenshare": true}}"#,
                "--heritage-template wholeRoom screenshare",
            ),
            (
                r#"{"playDomain": "p", "idleTimeoutSeconds": "300"}"#,
                "--heritage-template idleTimeoutSeconds",
            ),
            (
                r#"{"playDomain": "p", "idleTimeoutSeconds": 2}"#,
                "--heritage-template idleTimeoutSeconds",
            ),
            (
                r#"{"playDomain": "p", "storageCredentialsSecret": ""}"#,
                "--heritage-template storageCredentialsSecret",
            ),
            (
                r#"{"playDomain": "p", "cosEndpoint": "cos.example.com"}"#,
                "--heritage-template cosEndpoint",
            ),
            (
                r#"{"playDomain": "p", "relay": "start", "pushDomain": "q", "secretKeySecret": {"name": "k"}}"#,
                "--heritage-template secretKeySecret",
            ),
            (
                r#"{"playDomain": "p", "relay": "start", "pushDomain": "q", "secretKeySecret": {"name": "", "key": "k"}}"#,
                "--heritage-template secretKeySecret.name",
            ),
        ] {
            assert_eq!(refused(text), field, "{text}");
        }
    }
}
