//! Real cache servers on loopback for tests, each in its own temp dir, killed when dropped:
//! Debian's nginx with WebDAV PUT, and `s3s-fs`, an S3 server that checks SigV4 signatures.
//!
//! A missing server binary fails the test with a message naming `scripts/install-test-servers`:
//! these tests never skip.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";

/// The basic-auth user and password of nginx's `/auth/` location.
pub const NGINX_USER: (&str, &str) = ("ci", "s3cret");

fn missing(what: &str) -> ! {
    panic!(
        "{what} is not installed: run scripts/install-test-servers (installs Debian's nginx and \
         `cargo install s3s-fs`), then run the tests again"
    )
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// A running server process and the temp dir it lives in.
struct Proc {
    child: Child,
    port: u16,
}

impl Proc {
    /// Starts `command(port)` on free ports until one stays up and accepts connections (another
    /// process may take a port between our probe and the server's bind).
    fn start(name: &str, log: &Path, mut command: impl FnMut(u16) -> Command) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = command(port);
            // SAFETY: prctl(2) is async-signal-safe. The server dies with the thread that
            // started it, should the test process be killed before its guard drops.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let out = std::fs::File::create(log).expect("create a server log");
            cmd.stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup log"))
                .stderr(out);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
            let mut proc = Proc { child, port };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = proc.child.try_wait() {
                    break; // exited: try another port, or report below
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return proc;
                }
                if Instant::now() > deadline {
                    panic!(
                        "{name} did not listen on port {port} within 20 s; its log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "{name} exited at start five times; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx serving `<dir>/root` on 127.0.0.1:PORT with these locations:
/// - `/`        GET, HEAD and PUT (`dav_methods PUT; create_full_put_path on;`)
/// - `/ro/`     GET and HEAD only: a PUT is denied (403)
/// - `/auth/`   like `/`, behind basic auth as [`NGINX_USER`] (401 without)
/// - `/broken/` always 503
pub struct Nginx {
    // Dropped first: the process goes before its directory.
    proc: Proc,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start() -> Self {
        if !Path::new(NGINX).exists() {
            missing(NGINX);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().to_path_buf();
        std::fs::create_dir_all(d.join("root")).unwrap();
        std::fs::write(
            d.join("htpasswd"),
            format!("{}:{{PLAIN}}{}\n", NGINX_USER.0, NGINX_USER.1),
        )
        .unwrap();
        let conf = d.join("nginx.conf");
        let proc = Proc::start("nginx", &d.join("stderr.log"), |port| {
            std::fs::write(&conf, nginx_conf(&d, port)).unwrap();
            let mut cmd = Command::new(NGINX);
            cmd.arg("-p").arg(&d).arg("-c").arg(&conf);
            cmd.arg("-e").arg(d.join("error.log"));
            cmd
        });
        Nginx { proc, dir }
    }

    /// `http://127.0.0.1:PORT` followed by `path` (empty, or starting with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proc.port)
    }

    /// The directory nginx serves `/` from.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// The configuration docs/binary-cache.md ("nginx as a cache server") shows, with every path in the test's temp dir so
/// that it runs as root or not.
fn nginx_conf(d: &Path, port: u16) -> String {
    let d = d.display();
    format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {d}/root;
        client_max_body_size 0;
        dav_methods PUT;
        create_full_put_path on;
        dav_access user:rw group:r all:r;
        location / {{ }}
        location /ro/ {{ limit_except GET {{ deny all; }} }}
        location /auth/ {{
            auth_basic "pybake cache";
            auth_basic_user_file {d}/htpasswd;
        }}
        location /broken/ {{ return 503; }}
    }}
}}
"#
    )
}

/// `s3s-fs` serving buckets from `<dir>/data` on 127.0.0.1:PORT, checking signatures against
/// [`S3Server::ACCESS_KEY`] / [`S3Server::SECRET_KEY`].
pub struct S3Server {
    proc: Proc,
    dir: tempfile::TempDir,
}

impl S3Server {
    pub const ACCESS_KEY: &'static str = "pybake-test";
    pub const SECRET_KEY: &'static str = "pybake-test-secret";

    /// Starts the server with an empty bucket named `bucket`.
    pub fn start(bucket: &str) -> Self {
        let bin = s3s_fs_binary().unwrap_or_else(|| missing("s3s-fs"));
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join(bucket)).unwrap();
        let proc = Proc::start("s3s-fs", &dir.path().join("s3s-fs.log"), |port| {
            let mut cmd = Command::new(&bin);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", Self::ACCESS_KEY])
                .args(["--secret-key", Self::SECRET_KEY])
                .arg(&data)
                .env("RUST_LOG", "warn");
            cmd
        });
        S3Server { proc, dir }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// `s3://BUCKET/PREFIX?endpoint=...&region=us-east-1`.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1",
            self.endpoint()
        )
    }

    /// The variables of a client with these credentials (and nothing from the test's own
    /// environment, so that no other AWS setting or metadata service is involved).
    pub fn env(access_key: &str, secret_key: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), access_key.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), secret_key.into()),
        ]
    }

    /// The right credentials.
    pub fn good_env() -> Vec<(String, String)> {
        Self::env(Self::ACCESS_KEY, Self::SECRET_KEY)
    }

    /// Where the server keeps `bucket`'s objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.dir.path().join("data").join(bucket)
    }
}

/// `s3s-fs` on PATH, else where `cargo install` puts it.
fn s3s_fs_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("s3s-fs"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin/s3s-fs"));
    on_path.chain(cargo_home).find(|p| p.is_file())
}
