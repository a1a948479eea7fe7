//! Object keys from a template. Variables: `{stream}` (`{sdkAppId}_{room}_{user}` for TRTC,
//! the stream name for a URL), `{user}`, `{start}` (the session's start, `20251124T160000Z`),
//! `{part}` (`0001`), `{ext}` (`mp3`/`mp4`), `{mode}` (`00`/`01`/`02`).
//! The default, `{stream}_{start}_part{part}.{ext}`, differs between users (stream), sessions
//! and restarts (start) and parts (part).

pub const DEFAULT_TEMPLATE: &str = "{stream}_{start}_part{part}.{ext}";

/// Why a key template is refused: each names the template and the rule it breaks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyTemplateError {
    #[error("unclosed '{{' in key template {0:?}")]
    Unclosed(String),
    #[error(
        "unknown variable {{{name}}} in key template {template:?}; known: {{stream}} {{user}} {{start}} {{part}} {{ext}} {{mode}}"
    )]
    UnknownVariable { name: String, template: String },
    #[error("key template {0:?} has no {{part}}: parts would overwrite each other")]
    NoPart(String),
    #[error("key template {0:?} must be relative and must not contain '..'")]
    NotRelative(String),
}

#[derive(Debug, Clone)]
pub struct KeyTemplate {
    template: String,
}

pub struct KeyVars<'a> {
    pub stream: &'a str,
    pub user: &'a str,
    pub start: &'a str,
    pub ext: &'a str,
    pub mode: &'a str,
}

const KNOWN: &[&str] = &["stream", "user", "start", "part", "ext", "mode"];

impl KeyTemplate {
    pub fn parse(template: &str) -> Result<Self, KeyTemplateError> {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| KeyTemplateError::Unclosed(template.to_string()))?;
            let name = &rest[open + 1..open + close];
            if !KNOWN.contains(&name) {
                return Err(KeyTemplateError::UnknownVariable {
                    name: name.to_string(),
                    template: template.to_string(),
                });
            }
            rest = &rest[open + close + 1..];
        }
        if !template.contains("{part}") {
            return Err(KeyTemplateError::NoPart(template.to_string()));
        }
        if template.starts_with('/') || template.contains("..") {
            return Err(KeyTemplateError::NotRelative(template.to_string()));
        }
        Ok(Self {
            template: template.to_string(),
        })
    }

    pub fn render(&self, vars: &KeyVars, part: u32) -> String {
        self.render_part_as(vars, &format!("{part:04}"))
    }

    fn render_part_as(&self, vars: &KeyVars, part: &str) -> String {
        self.template
            .replace("{stream}", vars.stream)
            .replace("{user}", vars.user)
            .replace("{start}", vars.start)
            .replace("{part}", part)
            .replace("{ext}", vars.ext)
            .replace("{mode}", vars.mode)
    }

    /// Whether `file` (the last path segment of a key, as a journal directory is named) is one
    /// of the parts these variables make: any part number, everything else the same. A worker
    /// rebuilds only such journals: another recording's (another person, another session) are
    /// that recording's to finish, even when it is still running.
    pub fn is_part_file(&self, vars: &KeyVars, file: &str) -> bool {
        const MARK: &str = "\u{0}";
        let key = self.render_part_as(vars, MARK);
        let Some((before, after)) = key.rsplit('/').next().and_then(|f| f.split_once(MARK)) else {
            return false;
        };
        file.len() >= before.len() + after.len() + 4
            && file.starts_with(before)
            && file.ends_with(after)
            && file[before.len()..file.len() - after.len()]
                .bytes()
                .all(|b| b.is_ascii_digit())
    }
}

/// `2025-11-24T16:00:00Z` → `20251124T160000Z`
pub fn compact_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_matches_the_heritage_form() {
        let t = KeyTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        let start = compact_time("2025-11-24T16:00:00Z".parse().unwrap());
        let vars = KeyVars {
            stream: "1400000000_43474_alice",
            user: "alice",
            start: &start,
            ext: "mp4",
            mode: "02",
        };
        assert_eq!(
            t.render(&vars, 1),
            "1400000000_43474_alice_20251124T160000Z_part0001.mp4"
        );
        assert_ne!(t.render(&vars, 1), t.render(&vars, 2));
        let bob = KeyVars {
            stream: "1400000000_43474_bob",
            ..vars
        };
        assert_ne!(
            t.render(&bob, 1),
            "1400000000_43474_alice_20251124T160000Z_part0001.mp4"
        );
    }

    #[test]
    fn a_journal_is_ours_only_for_our_stream_and_session_whatever_its_part() {
        let t = KeyTemplate::parse("rec/{stream}_{start}_part{part}.{ext}").unwrap();
        let vars = KeyVars {
            stream: "1400000000_43474_alice",
            user: "alice",
            start: "20251124T160000Z",
            ext: "mp4",
            mode: "02",
        };
        let ours = "1400000000_43474_alice_20251124T160000Z_part0003.mp4";
        assert!(t.is_part_file(&vars, ours));
        assert!(t.is_part_file(
            &vars,
            "1400000000_43474_alice_20251124T160000Z_part10001.mp4"
        ));
        for theirs in [
            "1400000000_43474_bob_20251124T160000Z_part0001.mp4",
            "1400000000_43474_alice_20251124T160001Z_part0001.mp4",
            "1400000000_43474_alice_20251124T160000Z_part0001.mp3",
            "1400000000_43474_alice_20251124T160000Z_partXX01.mp4",
            "1400000000_43474_alice-2_20251124T160000Z_part0001.mp4",
        ] {
            assert!(!t.is_part_file(&vars, theirs), "{theirs}");
        }
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let refused = |t: &str| KeyTemplate::parse(t).unwrap_err().to_string();
        assert!(refused("{stream}.{ext}").contains("no {part}"));
        assert!(refused("{room}/{part}").contains("unknown variable {room}"));
        assert!(refused("../{part}").contains(".."));
        assert!(refused("{part").contains("unclosed"));
        assert_eq!(
            KeyTemplate::parse("/{part}").unwrap_err(),
            KeyTemplateError::NotRelative("/{part}".into())
        );
        assert!(KeyTemplate::parse("{user}/{start}/{part}.{ext}").is_ok());
    }
}
