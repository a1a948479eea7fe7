//! etcd + kube-apiserver (RBAC on, TLS with a CA of our own, service-account tokens that
//! TokenRequest can mint) + kube-controller-manager (job, garbage collector, namespace,
//! service accounts, root CA publisher, deployments), all real binaries on loopback.

use crate::binaries;
use crate::error::{Result, TestbedError, file_error};
use crate::ports::free_port;
use crate::process::{Supervised, port_open, run};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The bearer token of the test bed's cluster admin (group system:masters).
pub const ADMIN_TOKEN: &str = "roomrec-testbed-admin";

/// Controllers of kube-controller-manager the test bed runs: enough for Jobs to create Pods,
/// owner references to cascade, namespaces to be deleted, and pods to get service accounts.
pub const CONTROLLERS: &str = "job,garbagecollector,namespace,serviceaccount,root-ca-cert-publisher,ttl-after-finished,deployment,replicaset";

pub struct ControlPlane {
    pub api_port: u16,
    pub kubeconfig: PathBuf,
    pub ca_cert: PathBuf,
    // Dropped in reverse order of start: the controller manager first, etcd last.
    pub controller_manager: Supervised,
    pub apiserver: Supervised,
    pub etcd: Supervised,
    apiserver_setup: ApiServerSetup,
}

/// What kube-apiserver is started with, kept to restart it.
struct ApiServerSetup {
    etcd_port: u16,
    api_port: u16,
    dir: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    ca_cert: PathBuf,
    tokens: PathBuf,
    sa_public: PathBuf,
    sa_private: PathBuf,
}

impl ApiServerSetup {
    async fn start(&self) -> Result<Supervised> {
        let (etcd_port, api_port, dir) = (self.etcd_port, self.api_port, &self.dir);
        let mut apiserver = Command::new(binaries::pinned("kube-apiserver")?);
        apiserver.args([
            &format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            // The endpoint reconciler refuses loopback addresses; pods reach 127.0.0.1 directly.
            "--endpoint-reconciler-type=none",
            &format!("--secure-port={api_port}"),
            &format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            &format!("--tls-cert-file={}", self.serving_cert.display()),
            &format!("--tls-private-key-file={}", self.serving_key.display()),
            &format!("--client-ca-file={}", self.ca_cert.display()),
            &format!("--token-auth-file={}", self.tokens.display()),
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-account-key-file={}", self.sa_public.display()),
            &format!(
                "--service-account-signing-key-file={}",
                self.sa_private.display()
            ),
            "--service-cluster-ip-range=10.96.0.0/24",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]);
        if let Some(log) = std::env::var_os(AUDIT_LOG_VAR) {
            apiserver.args(audit_flags(dir, Path::new(&log))?);
        }
        let mut apiserver =
            Supervised::spawn("kube-apiserver", apiserver, &dir.join("kube-apiserver.log"))?;
        let probe = HttpsProbe::new(&self.ca_cert, api_port)?;
        apiserver
            .wait_ready(Duration::from_secs(90), || probe.ok("/readyz"))
            .await?;
        Ok(apiserver)
    }
}

/// Set to a file path, kube-apiserver writes an audit log there: one JSON line per finished
/// request with the user who made it (`make bench` splits the API's load between the operator
/// and the workers with it). Off by default: every request would cost a write.
pub const AUDIT_LOG_VAR: &str = "ROOMREC_TESTBED_AUDIT_LOG";

/// Every request at `Metadata` level (who, verb, resource; no bodies), once, when it completes.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
- level: Metadata
";

fn audit_flags(dir: &Path, log: &Path) -> Result<Vec<String>> {
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(&policy, AUDIT_POLICY).map_err(file_error(&policy))?;
    Ok(vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
        "--audit-log-format=json".into(),
        "--audit-log-maxsize=0".into(),
    ])
}

impl ControlPlane {
    pub async fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        let pki = Pki::create(&dir.join("pki"))?;

        let etcd_port = free_port();
        let peer_port = free_port();
        let mut etcd = Command::new(binaries::pinned("etcd")?);
        etcd.args([
            "--name=testbed",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            &format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            &format!("--initial-cluster=testbed=http://127.0.0.1:{peer_port}"),
            // A test cluster's data is thrown away; fsync would only slow every write.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]);
        let mut etcd = Supervised::spawn("etcd", etcd, &dir.join("etcd.log"))?;
        etcd.wait_ready(Duration::from_secs(30), || port_open(etcd_port))
            .await?;

        let api_port = free_port();
        let apiserver_setup = ApiServerSetup {
            etcd_port,
            api_port,
            dir: dir.to_path_buf(),
            serving_cert: pki.serving_cert.clone(),
            serving_key: pki.serving_key.clone(),
            ca_cert: pki.ca_cert.clone(),
            tokens: pki.tokens.clone(),
            sa_public: pki.sa_public.clone(),
            sa_private: pki.sa_private.clone(),
        };
        let apiserver = apiserver_setup.start().await?;

        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, api_port, &pki.ca_cert, ADMIN_TOKEN)?;

        let kcm_port = free_port();
        let mut kcm = Command::new(binaries::pinned("kube-controller-manager")?);
        kcm.args([
            &format!("--kubeconfig={}", kubeconfig.display()),
            &format!("--authentication-kubeconfig={}", kubeconfig.display()),
            &format!("--authorization-kubeconfig={}", kubeconfig.display()),
            &format!("--controllers={CONTROLLERS}"),
            &format!("--root-ca-file={}", pki.ca_cert.display()),
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            &format!("--secure-port={kcm_port}"),
            &format!("--cert-dir={}", dir.join("kcm-certs").display()),
            "--v=1",
        ]);
        let mut controller_manager = Supervised::spawn(
            "kube-controller-manager",
            kcm,
            &dir.join("kube-controller-manager.log"),
        )?;
        controller_manager
            .wait_ready(Duration::from_secs(60), || port_open(kcm_port))
            .await?;

        Ok(Self {
            api_port,
            kubeconfig,
            ca_cert: pki.ca_cert,
            controller_manager,
            apiserver,
            etcd,
            apiserver_setup,
        })
    }

    /// Stops kube-apiserver and starts it again on the same port and data (an upgrade or a
    /// crash of the control plane, as clients see it); returns once it is ready.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.stop();
        self.apiserver = self.apiserver_setup.start().await?;
        Ok(())
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }
}

/// A kube client for the cluster behind `kubeconfig`.
pub async fn client_from_kubeconfig(kubeconfig: &Path) -> Result<kube::Client> {
    let config =
        Kubeconfig::read_from(kubeconfig).map_err(|e| TestbedError::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| TestbedError::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

/// Writes a kubeconfig for `token` (the admin's, or a service account's from TokenRequest).
pub fn write_kubeconfig(path: &Path, api_port: u16, ca: &Path, token: &str) -> Result<()> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: https://127.0.0.1:{api_port}
    certificate-authority: {ca}
users:
- name: testbed
  user:
    token: {token}
contexts:
- name: testbed
  context:
    cluster: testbed
    user: testbed
    namespace: default
current-context: testbed
",
        ca = ca.display()
    );
    std::fs::write(path, text).map_err(file_error(path))
}

/// The cluster's keys: a CA, the API server's serving certificate, the service-account signing
/// key pair and the static token file for the admin.
struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_private: PathBuf,
    sa_public: PathBuf,
    tokens: PathBuf,
}

impl Pki {
    fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        let openssl = binaries::system("openssl")?;
        let p = |name: &str| dir.join(name);
        let ossl = |what: &str, args: &[&str]| {
            run(what, Command::new(&openssl).args(args).current_dir(dir)).map(drop)
        };
        ossl(
            "openssl: CA",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "30",
                "-subj",
                "/CN=roomrec-testbed-ca",
            ],
        )?;
        ossl(
            "openssl: serving key",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "apiserver.key",
                "-out",
                "apiserver.csr",
                "-subj",
                "/CN=kube-apiserver",
            ],
        )?;
        let ext = p("apiserver.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n",
        )
        .map_err(file_error(&ext))?;
        ossl(
            "openssl: serving certificate",
            &[
                "x509",
                "-req",
                "-in",
                "apiserver.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "apiserver.crt",
                "-days",
                "30",
                "-extfile",
                "apiserver.ext",
            ],
        )?;
        ossl(
            "openssl: service-account key",
            &["genrsa", "-out", "sa.key", "2048"],
        )?;
        ossl(
            "openssl: service-account public key",
            &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        )?;
        let tokens = p("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{ADMIN_TOKEN},testbed-admin,testbed-admin,\"system:masters\"\n"),
        )
        .map_err(file_error(&tokens))?;
        Ok(Self {
            ca_cert: p("ca.crt"),
            serving_cert: p("apiserver.crt"),
            serving_key: p("apiserver.key"),
            sa_private: p("sa.key"),
            sa_public: p("sa.pub"),
            tokens,
        })
    }
}

/// GETs a path of the API server with the admin token, trusting only the test bed's CA.
struct HttpsProbe {
    client: reqwest::Client,
    base: String,
}

impl HttpsProbe {
    fn new(ca: &Path, port: u16) -> Result<Self> {
        let pem = std::fs::read(ca).map_err(file_error(ca))?;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self {
            client,
            base: format!("https://127.0.0.1:{port}"),
        })
    }

    async fn ok(&self, path: &str) -> bool {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}
