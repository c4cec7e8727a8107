//! A real broker that requires what production brokers require: a SASL_SSL listener
//! (SCRAM-SHA-512 over TLS) with a throwaway CA and broker certificate, and the
//! `StandardAuthorizer` with `allow.everyone.if.no.acl.found=false`, each of tollgate's
//! components a principal of its own with the ACLs of `deploy/kafka-acls.sh`.
//!
//! ```no_run
//! let secured = tollgate_e2e::security::shared();
//! let worker = secured.user(tollgate_e2e::security::WORKER);
//! // tollgate run --bootstrap-servers <secured.bootstrap_servers()> with worker.env() ...
//! ```
//!
//! # Setup
//!
//! - `openssl` makes a CA, a broker key and a certificate signed by it for `IP:127.0.0.1`
//!   only (so connecting as `localhost` fails hostname verification), a PKCS#12 keystore for
//!   the broker, and a second, untrusted CA to test certificate failures.
//! - `kafka-storage format --add-scram` creates every principal's SCRAM-SHA-512 credentials,
//!   with random passwords, before the first start.
//! - `deploy/kafka-acls.sh` grants the ACLs, through Kafka's `AclCommand`.
//!
//! The PLAINTEXT listener stays, for the harness alone (readiness, topic waits, the console
//! consumer, the ACL tool): its unauthenticated principal `User:ANONYMOUS` is a super user,
//! which the single node's own controller and inter-broker connections need anyway. Nothing
//! under test connects to it.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::broker::{Broker, Listener, temp_dir};
use crate::ports::PortLease;

/// The worker's principal (`tollgate run`).
pub const WORKER: &str = "tollgate-worker";
/// The admin's principal (`tollgate admin`).
pub const ADMIN: &str = "tollgate-admin";
/// The producer's principal (call controllers, `tollgate produce`).
pub const PRODUCER: &str = "tollgate-producer";
/// Downstream billing's principal (reads rated usage).
pub const BILLING: &str = "billing-reader";

/// Every principal, with credentials created at format time.
pub const USERS: [&str; 4] = [WORKER, ADMIN, PRODUCER, BILLING];

/// The broker's keystore password (a test secret of no value).
const KEYSTORE_PASSWORD: &str = "tollgate-test-keystore";

/// Longest run of the ACL script (ten JVM starts).
const ACL_DEADLINE: Duration = Duration::from_secs(180);

/// The SASL_SSL broker, its certificates and its users' passwords.
#[derive(Debug)]
pub struct Secured {
    broker: Broker,
    sasl_port: u16,
    /// The SASL_SSL port's lease, held for the broker's life.
    _sasl_lease: PortLease,
    /// The throwaway CA that signed the broker's certificate.
    ca: PathBuf,
    /// A CA that signed nothing the broker presents.
    untrusted_ca: PathBuf,
    passwords: Vec<(String, String)>,
}

/// One principal's client settings.
#[derive(Clone, Debug)]
pub struct User {
    /// SCRAM user name (the principal is `User:<name>`).
    pub name: String,
    /// Its password.
    pub password: String,
    ca: PathBuf,
}

impl User {
    /// The librdkafka settings of a SASL_SSL client of this user, as `TOLLGATE_*` variables
    /// (`LIBRDKAFKA_SASL_PASSWORD`, ...) without the prefix: the password goes through the
    /// environment, as deploy/README.md recommends, never through the command line.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LIBRDKAFKA_SECURITY_PROTOCOL".into(), "SASL_SSL".into()),
            ("LIBRDKAFKA_SASL_MECHANISM".into(), "SCRAM-SHA-512".into()),
            ("LIBRDKAFKA_SASL_USERNAME".into(), self.name.clone()),
            ("LIBRDKAFKA_SASL_PASSWORD".into(), self.password.clone()),
            ("LIBRDKAFKA_SSL_CA_LOCATION".into(), self.ca.display().to_string()),
        ]
    }

    /// The same settings as librdkafka keys (for in-process clients).
    pub fn librdkafka(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("LIBRDKAFKA_").to_ascii_lowercase().replace('_', "."), v))
            .collect()
    }

    /// This user with another password.
    pub fn with_password(&self, password: &str) -> User {
        User { password: password.to_owned(), ..self.clone() }
    }

    /// This user trusting another CA.
    pub fn trusting(&self, ca: &Path) -> User {
        User { ca: ca.to_path_buf(), ..self.clone() }
    }
}

/// The SASL_SSL broker shared by the tests of one test binary (see [`crate::broker::shared`]
/// for why a static broker leaves nothing behind).
pub fn shared() -> &'static Secured {
    static SHARED: OnceLock<Secured> = OnceLock::new();
    SHARED.get_or_init(Secured::start)
}

impl Secured {
    /// Makes the certificates, formats the storage with the users' credentials, starts the
    /// broker and grants the ACLs of `deploy/kafka-acls.sh`.
    pub fn start() -> Secured {
        let dir = temp_dir();
        let certs = dir.join("certs");
        fs::create_dir_all(&certs).unwrap_or_else(|e| panic!("{}: {e}", certs.display()));
        make_certificates(&certs);
        let passwords: Vec<(String, String)> = USERS.iter().map(|u| ((*u).to_owned(), random_password())).collect();
        let format_args: Vec<String> = passwords
            .iter()
            .flat_map(|(name, password)| {
                ["--add-scram".to_owned(), format!("SCRAM-SHA-512=[name={name},password={password}]")]
            })
            .collect();
        let sasl_lease = crate::fleet::free_port();
        let sasl_port = sasl_lease.port();
        let keystore = certs.join("broker.p12").display().to_string();
        let overrides = [
            ("sasl.enabled.mechanisms", "SCRAM-SHA-512"),
            (
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ),
            ("ssl.keystore.type", "PKCS12"),
            ("ssl.keystore.location", keystore.as_str()),
            ("ssl.keystore.password", KEYSTORE_PASSWORD),
            ("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer"),
            ("allow.everyone.if.no.acl.found", "false"),
            ("super.users", "User:ANONYMOUS"),
        ];
        let listener = Listener { protocol: "SASL_SSL".into(), port: sasl_port };
        let broker = Broker::start_in(dir, Some(listener), &overrides, &format_args);
        let secured = Secured {
            broker,
            sasl_port,
            _sasl_lease: sasl_lease,
            ca: certs.join("ca.pem"),
            untrusted_ca: certs.join("untrusted-ca.pem"),
            passwords,
        };
        secured.grant_acls();
        secured
    }

    /// `127.0.0.1:<port>` of the SASL_SSL listener.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port)
    }

    /// The SASL_SSL listener by a name its certificate does not carry.
    pub fn bootstrap_by_wrong_name(&self) -> String {
        format!("localhost:{}", self.sasl_port)
    }

    /// The broker (its PLAINTEXT listener is the harness's super-user back door).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// A CA that did not sign the broker's certificate.
    pub fn untrusted_ca(&self) -> &Path {
        &self.untrusted_ca
    }

    /// The client settings of one of [`USERS`].
    pub fn user(&self, name: &str) -> User {
        let password = self
            .passwords
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("no user {name}"));
        User { name: name.to_owned(), password, ca: self.ca.clone() }
    }

    /// Runs `deploy/kafka-acls.sh` with Kafka's `AclCommand` as `KAFKA_ACLS`, on the
    /// PLAINTEXT (super-user) listener.
    fn grant_acls(&self) {
        let started = std::time::Instant::now();
        let dir = self.broker.dir();
        // One run first, to archive the tool's classes for the script's runs (see
        // broker::ClassArchive): it lists the (still empty) ACLs.
        let list = ["--bootstrap-server".to_owned(), self.broker.bootstrap_servers(), "--list".to_owned()];
        let output = self.broker.run_tool("acl", ACL_COMMAND, &list, Duration::from_secs(60));
        assert!(output.status.success(), "kafka-acls --list failed: {}", String::from_utf8_lossy(&output.stderr));
        let libs = crate::broker::libs_dir();
        let java = std::env::var_os("JAVA_HOME")
            .map_or_else(|| PathBuf::from("java"), |home| Path::new(&home).join("bin/java"));
        let wrapper = dir.join("kafka-acls");
        fs::write(
            &wrapper,
            format!(
                "#!/usr/bin/env bash\nexec '{}' -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xlog:disable \
                 -XX:SharedArchiveFile='{}' -Dlog4j2.configurationFile='{}' -Dtollgate.kafka.log='{}' \
                 -cp '{}/*' {ACL_COMMAND} \"$@\"\n",
                java.display(),
                libs.join(".cds/acl.jsa").display(),
                crate::broker::workspace_root().join("tests/kafka/log4j2.xml").display(),
                dir.join("acl.log").display(),
                libs.display(),
            ),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", wrapper.display()));
        let script = crate::broker::workspace_root().join("deploy/kafka-acls.sh");
        let mut command = Command::new("bash");
        command
            .arg(&script)
            .env("BOOTSTRAP", self.broker.bootstrap_servers())
            .env("KAFKA_ACLS", format!("bash {}", wrapper.display()))
            .env("WORKER", format!("User:{WORKER}"))
            .env("ADMIN", format!("User:{ADMIN}"))
            .env("PRODUCER", format!("User:{PRODUCER}"))
            .env("BILLING", format!("User:{BILLING}"));
        let output = crate::broker::run_bounded(command, ACL_DEADLINE, "deploy/kafka-acls.sh");
        assert!(
            output.status.success(),
            "deploy/kafka-acls.sh failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("ACLs granted in {:.1} s", started.elapsed().as_secs_f64());
    }
}

/// Kafka's `kafka-acls.sh` main class.
const ACL_COMMAND: &str = "org.apache.kafka.tools.AclCommand";

/// 24 random hexadecimal characters: distinctive enough to grep logs for.
fn random_password() -> String {
    let mut bytes = [0u8; 12];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap_or_else(|e| panic!("/dev/urandom: {e}"));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A CA, the broker's certificate for `IP:127.0.0.1` signed by it in a PKCS#12 keystore, and
/// an unrelated CA, with `openssl`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (is it installed?): {e}"));
        assert!(
            output.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let days = ["-days", "2"];
    for (key, cert, subject) in
        [("ca.key", "ca.pem", "/CN=tollgate test CA"), ("untrusted-ca.key", "untrusted-ca.pem", "/CN=untrusted CA")]
    {
        openssl(
            &[
                &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-subj", subject],
                &days[..],
            ]
            .concat(),
        );
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap_or_else(|e| panic!("san.ext: {e}"));
    let x509: &[&str] = &["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
    openssl(&[x509, &["-out", "broker.pem", "-extfile", "san.ext"], &days[..]].concat());
    let pass = format!("pass:{KEYSTORE_PASSWORD}");
    openssl(&[
        "pkcs12",
        "-export",
        "-in",
        "broker.pem",
        "-inkey",
        "broker.key",
        "-certfile",
        "ca.pem",
        "-out",
        "broker.p12",
        "-passout",
        &pass,
    ]);
}
