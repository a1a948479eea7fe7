//! The operator's defaults for fields a RecordingJob leaves out (chart values
//! `worker.defaults.*`). They are written into the job's spec before it starts, like a
//! defaulting webhook would: `kubectl get rj` shows the mode in use, and a later change of the
//! operator's defaults never changes a job that is already recording.

use roomrec_api::crd::{Mode, RecordingJobSpec, Storage};
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq)]
pub struct JobDefaults {
    pub mode: Mode,
    pub idle_timeout_seconds: u32,
    /// None: every job must set spec.storage.
    pub storage: Option<Storage>,
}

impl Default for JobDefaults {
    fn default() -> Self {
        Self {
            mode: roomrec_api::defaults::MODE,
            idle_timeout_seconds: roomrec_api::defaults::IDLE_TIMEOUT_SECONDS,
            storage: None,
        }
    }
}

/// What defaulting a spec needs.
#[derive(Debug, PartialEq)]
pub enum Defaulting {
    /// Every defaultable field is set.
    Complete,
    /// A merge patch of `spec` that fills in what is missing.
    Patch(Value),
    /// A field is missing and there is no default for it: the problem, naming the fix.
    Impossible(String),
}

impl JobDefaults {
    pub fn apply_to(&self, spec: &RecordingJobSpec) -> Defaulting {
        let mut patch = serde_json::Map::new();
        if spec.mode.is_none() {
            patch.insert("mode".into(), json!(self.mode));
        }
        if spec.idle_timeout_seconds.is_none() {
            patch.insert(
                "idleTimeoutSeconds".into(),
                json!(self.idle_timeout_seconds),
            );
        }
        if spec.storage.is_none() {
            match &self.storage {
                Some(storage) => {
                    patch.insert("storage".into(), json!(storage));
                }
                None => {
                    return Defaulting::Impossible(
                        "spec.storage is not set and the operator has no default storage: set \
                         spec.storage (cos, s3 or volume), or give the operator a default with \
                         the chart value worker.defaults.storage (flag --default-storage)"
                            .into(),
                    );
                }
            }
        }
        if patch.is_empty() {
            Defaulting::Complete
        } else {
            Defaulting::Patch(json!({ "spec": patch }))
        }
    }
}

/// Parses `--default-storage`: the JSON of a `spec.storage`. A misspelt key would otherwise be
/// dropped silently and every job would record somewhere unexpected, so unknown keys are errors.
pub fn parse_storage(text: &str) -> Result<Option<Storage>, String> {
    let input: Value = serde_json::from_str(text)
        .map_err(|e| format!("--default-storage is not JSON ({e}): give spec.storage as JSON, e.g. {{\"s3\":{{\"bucket\":\"recordings\"}}}}"))?;
    if input.as_object().is_some_and(|o| o.is_empty()) || input.is_null() {
        return Ok(None);
    }
    let storage: Storage = serde_json::from_value(input.clone()).map_err(|e| {
        format!("--default-storage is not a valid spec.storage ({e}): see docs/configuration.md")
    })?;
    let kinds = [
        storage.cos.is_some(),
        storage.s3.is_some(),
        storage.volume.is_some(),
    ];
    if kinds.iter().filter(|set| **set).count() != 1 {
        return Err("--default-storage must set exactly one of cos, s3 or volume".into());
    }
    let known = serde_json::to_value(&storage).unwrap_or_default();
    if let Some(path) = unknown_key(&input, &known, "storage") {
        return Err(format!(
            "--default-storage has an unknown field {path}: check its spelling against spec.storage in docs/configuration.md"
        ));
    }
    Ok(Some(storage))
}

/// The first key of `input` that did not survive parsing into `known`.
fn unknown_key(input: &Value, known: &Value, path: &str) -> Option<String> {
    let (Value::Object(input), Value::Object(known)) = (input, known) else {
        return None;
    };
    input.iter().find_map(|(key, value)| match known.get(key) {
        None => Some(format!("{path}.{key}")),
        Some(known) => unknown_key(value, known, &format!("{path}.{key}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomrec_api::crd::RecordingJob;

    fn spec(yaml: &str) -> RecordingJobSpec {
        let job: RecordingJob = serde_yaml::from_str(&format!(
            "apiVersion: roomrec.dev/v1alpha1\nkind: RecordingJob\nmetadata: {{name: j}}\nspec:\n{yaml}"
        ))
        .unwrap();
        job.spec
    }

    #[test]
    fn missing_fields_are_filled_and_set_ones_kept() {
        let defaults = JobDefaults {
            storage: parse_storage(r#"{"s3":{"bucket":"rec","endpoint":"http://s3:9000"}}"#)
                .unwrap(),
            ..JobDefaults::default()
        };
        let Defaulting::Patch(patch) = defaults.apply_to(&spec("  source: {url: rtmp://h/live/a}"))
        else {
            panic!("expected a patch")
        };
        assert_eq!(patch["spec"]["mode"], "AudioMp3");
        assert_eq!(patch["spec"]["idleTimeoutSeconds"], 300);
        assert_eq!(patch["spec"]["storage"]["s3"]["bucket"], "rec");

        let complete = spec(
            "  source: {url: rtmp://h/live/a}\n  mode: VideoMp4\n  idleTimeoutSeconds: 9\n  storage: {volume: {claimName: c}}",
        );
        assert_eq!(defaults.apply_to(&complete), Defaulting::Complete);
    }

    #[test]
    fn no_default_storage_names_the_field_and_the_fix() {
        let Defaulting::Impossible(problem) =
            JobDefaults::default().apply_to(&spec("  source: {url: rtmp://h/live/a}"))
        else {
            panic!("expected a problem")
        };
        assert!(problem.contains("spec.storage") && problem.contains("worker.defaults.storage"));
    }

    #[test]
    fn default_storage_is_checked_strictly() {
        assert_eq!(parse_storage("{}").unwrap(), None);
        assert!(parse_storage("{\"s3\": {\"bucket\": \"b\"}, \"cos\": {\"region\": \"ap-shanghai\", \"bucket\": \"b-1250000000\"}}")
            .unwrap_err()
            .contains("exactly one"));
        assert!(
            parse_storage("{\"s3\": {\"bucket\": \"b\", \"endpiont\": \"http://x\"}}")
                .unwrap_err()
                .contains("storage.s3.endpiont")
        );
        assert!(parse_storage("s3://b").unwrap_err().contains("not JSON"));
    }
}
