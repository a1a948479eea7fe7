//! Prometheus, scraping every second the targets a test adds while it runs (file discovery).

use crate::binaries;
use crate::error::{Result, file_error};
use crate::ports::free_port;
use crate::process::Supervised;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub struct Prometheus {
    pub port: u16,
    targets_dir: std::path::PathBuf,
    process: Supervised,
}

impl Prometheus {
    /// Starts Prometheus scraping itself; `add_target` adds more while it runs.
    pub async fn start(dir: &Path) -> Result<Self> {
        let port = free_port();
        let targets_dir = dir.join("targets");
        std::fs::create_dir_all(&targets_dir).map_err(file_error(&targets_dir))?;
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n  \
             - job_name: testbed\n    file_sd_configs:\n      - files: ['{}/*.json']\n        refresh_interval: 1s\n",
            targets_dir.display()
        );
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).map_err(file_error(&file))?;
        let mut command = std::process::Command::new(binaries::system("prometheus")?);
        command.args([
            &format!("--config.file={}", file.display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn",
        ]);
        let mut process = Supervised::spawn("prometheus", command, &dir.join("prometheus.log"))?;
        let url = format!("http://127.0.0.1:{port}/-/ready");
        process
            .wait_ready(Duration::from_secs(30), || async {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await?;
        Ok(Self {
            port,
            targets_dir,
            process,
        })
    }

    /// The file-discovery directory (see `BedInfo::add_prometheus_target`).
    pub fn targets_dir(&self) -> &Path {
        &self.targets_dir
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an instant PromQL query; returns the `data.result` array.
    pub async fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>> {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()
            .await?
            .json()
            .await?;
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The health of every active target, as (job, health, last error).
    pub async fn targets(&self) -> Result<Vec<(String, String, String)>> {
        let body: serde_json::Value = reqwest::get(format!("{}/api/v1/targets", self.url()))
            .await?
            .json()
            .await?;
        Ok(body["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                    t["health"].as_str().unwrap_or_default().to_string(),
                    t["lastError"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    pub fn process(&mut self) -> &mut Supervised {
        &mut self.process
    }
}

/// The samples of a Prometheus text exposition: `name{labels}` (as written) → value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// GETs `http://{address}/metrics` and returns its samples.
pub async fn scrape(address: &str) -> Result<BTreeMap<String, f64>> {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(samples(&text))
}
