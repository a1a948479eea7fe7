//! Object keys from a template. Variables: `{stream}` (`{sdkAppId}_{room}_{user}` for TRTC,
//! the stream name for a URL), `{user}`, `{start}` (the session's start, `20251124T160000Z`),
//! `{part}` (`0001`), `{ext}` (`mp3`/`mp4`), `{mode}` (`00`/`01`/`02`).
//! The default, `{stream}_{start}_part{part}.{ext}`, differs between users (stream), sessions
//! and restarts (start) and parts (part).

pub const DEFAULT_TEMPLATE: &str = "{stream}_{start}_part{part}.{ext}";

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
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in key template {template:?}"))?;
            let name = &rest[open + 1..open + close];
            if !KNOWN.contains(&name) {
                return Err(format!(
                    "unknown variable {{{name}}} in key template {template:?}; known: {{stream}} {{user}} {{start}} {{part}} {{ext}} {{mode}}"
                ));
            }
            rest = &rest[open + close + 1..];
        }
        if !template.contains("{part}") {
            return Err(format!(
                "key template {template:?} has no {{part}}: parts would overwrite each other"
            ));
        }
        if template.starts_with('/') || template.contains("..") {
            return Err(format!(
                "key template {template:?} must be relative and must not contain '..'"
            ));
        }
        Ok(Self {
            template: template.to_string(),
        })
    }

    pub fn render(&self, vars: &KeyVars, part: u32) -> String {
        self.template
            .replace("{stream}", vars.stream)
            .replace("{user}", vars.user)
            .replace("{start}", vars.start)
            .replace("{part}", &format!("{part:04}"))
            .replace("{ext}", vars.ext)
            .replace("{mode}", vars.mode)
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
    fn bad_templates_are_refused_with_the_reason() {
        assert!(
            KeyTemplate::parse("{stream}.{ext}")
                .unwrap_err()
                .contains("no {part}")
        );
        assert!(
            KeyTemplate::parse("{room}/{part}")
                .unwrap_err()
                .contains("unknown variable {room}")
        );
        assert!(KeyTemplate::parse("../{part}").unwrap_err().contains(".."));
        assert!(
            KeyTemplate::parse("{part")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(KeyTemplate::parse("{user}/{start}/{part}.{ext}").is_ok());
    }
}
