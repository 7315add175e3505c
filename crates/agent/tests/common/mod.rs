//! Southbound rows written as ovn-northd and ovn-controller write them, a
//! metadata API to forward to, and "VMs" in namespaces.
#![allow(dead_code)]

use meta169_api::signing::sign_instance_id;
use meta169_api::{admin, metadata_handler, server, ApiSettings, MetadataService, ServerLimits};
use meta169_ovsdb::{Remote, Rpc};
use meta169_store::{SqliteStore, Store};
use meta169_testkit::sb::{self, RowRef, VmPort};
use meta169_testkit::Netns;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const SECRET: &[u8] = b"agent-test-secret";
pub const T: Duration = Duration::from_secs(20);
pub const DB: &str = sb::SB_DB;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network id unique to this test process and call (its first ten
/// characters name the veths, so they must differ).
pub fn network_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let head = (std::process::id() << 6 | n) & 0x0fff_ffff;
    format!("e{head:07x}-8c5f-4c09-aaf2-{:012x}", n)
}

pub struct Sb {
    pub rpc: Arc<Rpc>,
}

impl Sb {
    pub async fn connect(remote: &str) -> Sb {
        Sb {
            rpc: Rpc::connect(&remote.parse::<Remote>().unwrap())
                .await
                .unwrap()
                .0,
        }
    }

    pub async fn tx(&self, ops: Vec<Value>) -> Vec<Value> {
        self.rpc.transact(DB, ops, T).await.unwrap()
    }

    /// Chassis + Encap + Chassis_Private, as ovn-controller registers; returns the Chassis uuid.
    pub async fn chassis(&self, name: &str) -> String {
        let r = self.tx(sb::chassis(name)).await;
        r[1]["uuid"][1].as_str().unwrap().to_string()
    }

    pub async fn sb_global(&self, nb_cfg: i64) {
        let existing = self
            .tx(vec![
                json!({"op": "select", "table": "SB_Global", "where": []}),
            ])
            .await;
        if existing[0]["rows"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            self.tx(vec![json!({"op": "update", "table": "SB_Global", "where": [], "row": {"nb_cfg": nb_cfg}})]).await;
        } else {
            self.tx(vec![
                json!({"op": "insert", "table": "SB_Global", "row": {"nb_cfg": nb_cfg}}),
            ])
            .await;
        }
    }

    /// A Datapath_Binding for Neutron network `network` (as ovn-northd names it).
    pub async fn datapath(&self, network: &str, key: i64) -> String {
        let r = self.tx(vec![sb::datapath(network, key, None)]).await;
        r[0]["uuid"][1].as_str().unwrap().to_string()
    }

    /// The network's metadata localport.
    pub async fn metadata_port(
        &self,
        network: &str,
        datapath: &str,
        mac: &str,
        cidr: &str,
        key: i64,
    ) {
        self.tx(vec![sb::metadata_port(
            network,
            RowRef::Uuid(datapath),
            mac,
            cidr,
            key,
        )])
        .await;
    }

    /// A VM port, bound to `chassis` if given.
    #[allow(clippy::too_many_arguments)]
    pub async fn vm_port(
        &self,
        name: &str,
        datapath: &str,
        mac: &str,
        ip: &str,
        instance: &str,
        project: &str,
        chassis: Option<&str>,
        key: i64,
    ) {
        self.tx(vec![sb::vm_port(&VmPort {
            name,
            datapath: RowRef::Uuid(datapath),
            mac,
            ips: ip,
            instance,
            project,
            chassis: chassis.map(RowRef::Uuid),
            key,
        })])
        .await;
    }

    pub async fn bind(&self, port: &str, chassis: Option<&str>) {
        self.tx(vec![sb::bind(port, chassis.map(RowRef::Uuid))])
            .await;
    }

    pub async fn chassis_private_ids(&self, name: &str) -> serde_json::Map<String, Value> {
        let r = self
            .tx(vec![json!({"op": "select", "table": "Chassis_Private", "where": [["name", "==", name]], "columns": ["external_ids"]})])
            .await;
        let pairs = r[0]["rows"][0]["external_ids"][1]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pairs
            .into_iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].clone()))
            .collect()
    }
}

/// A metadata API in signed mode, in-process on loopback.
pub struct Api {
    pub url: String,
    pub admin: String,
    pub service: Arc<MetadataService>,
}

impl Api {
    pub async fn start() -> Api {
        let mut settings = ApiSettings::default();
        settings.identity.shared_secret = SECRET.to_vec();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let limits = meta169_api::metadata_listener_limits(&settings, ServerLimits::default());
        let service = Arc::new(MetadataService::new(store, settings, limits.clone()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve_direct(
            listener,
            metadata_handler(service.clone()),
            limits,
            std::future::pending(),
        ));
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", admin_listener.local_addr().unwrap());
        tokio::spawn(server::serve(
            admin_listener,
            admin::router(service.clone(), "t".into()),
            ServerLimits::default(),
            std::future::pending(),
        ));
        Api {
            url,
            admin,
            service,
        }
    }

    /// This API as the agent's upstream, with the test secret.
    pub fn upstream(&self) -> meta169_agent::Upstream {
        meta169_agent::Upstream {
            url: self.url.clone(),
            shared_secret: SECRET.to_vec(),
            timeout: Duration::from_secs(10),
            insecure: false,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            pipelining: meta169_agent::Pipelining::Auto,
        }
    }

    /// Register an instance (the example record with this uuid and project).
    pub async fn add(&self, uuid: &str, project: &str, hostname: &str) {
        let mut instance = meta169_tree::example_instance();
        instance.uuid = uuid.to_string();
        instance.project_id = project.to_string();
        instance.hostname = hostname.to_string();
        instance.ports.clear();
        self.service.store.put_instance(&instance).await.unwrap();
    }
}

pub fn signature(instance: &str) -> String {
    sign_instance_id(SECRET, instance)
}

/// A "VM": a namespace with a veth whose host end is `host_if`, an address,
/// and the route to 169.254.169.254 via the metadata port, as DHCP option
/// 121 would install it.
pub struct Vm {
    pub ns: Netns,
    pub host_if: String,
    pub guest_if: String,
}

impl Vm {
    pub fn new(tag: &str, mac: &str, cidr: &str, metadata_ip: &str) -> Vm {
        let ns = Netns::new(tag);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let host_if = format!("vh{}x{n}", std::process::id() % 100_000);
        let guest_if = format!("vg{}x{n}", std::process::id() % 100_000);
        meta169_testkit::ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &guest_if, "netns", &ns.name,
        ]);
        ns.ip(&["link", "set", &guest_if, "address", mac]);
        ns.ip(&["addr", "add", cidr, "dev", &guest_if]);
        ns.ip(&["link", "set", &guest_if, "up"]);
        ns.ip(&["route", "add", "169.254.169.254/32", "via", metadata_ip]);
        meta169_testkit::ip(&["link", "set", &host_if, "up"]);
        Vm {
            ns,
            host_if,
            guest_if,
        }
    }

    /// GET a URL from inside the VM with Python's urllib: (status, body).
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let script = format!(
            "import json,sys,urllib.request,urllib.error\nreq=urllib.request.Request({url:?}, headers={headers})\ntry:\n r=urllib.request.urlopen(req, timeout=10); print(json.dumps([r.status, r.read().decode()]))\nexcept urllib.error.HTTPError as e:\n print(json.dumps([e.code, e.read().decode()]))\nexcept Exception as e:\n print(json.dumps([0, repr(e)]))\n",
            headers = serde_json::to_string(&headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::HashMap<_, _>>()).unwrap()
        );
        self.status_script(&script)
    }
}

impl Vm {
    /// Run a Python script in the VM that prints `[status, body]`.
    fn status_script(&self, script: &str) -> (u16, String) {
        let out = self
            .ns
            .command("python3")
            .args(["-c", script])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| json!([0, String::from_utf8_lossy(&out.stderr)]));
        (
            v[0].as_u64().unwrap_or(0) as u16,
            v[1].as_str().unwrap_or_default().to_string(),
        )
    }

    /// GET over IPv6 from the VM's own EUI-64 link-local address to
    /// fe80::a9fe:a9fe on its interface, as cloud-init's first URL does.
    pub fn get6(&self, path: &str) -> (u16, String) {
        let script = format!(
            "import json,socket\ntry:\n s=socket.create_connection(('fe80::a9fe:a9fe%{iface}', 80), timeout=2)\n s.sendall(b'GET {path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n d=b''\n while True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\n head,_,body=d.partition(b'\\r\\n\\r\\n')\n print(json.dumps([int(head.split()[1]), body.decode()]))\nexcept Exception as e:\n print(json.dumps([0, repr(e)]))\n",
            iface = self.guest_if
        );
        self.status_script(&script)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}

/// A Linux bridge in the agent's namespace, deleted on drop.
pub struct LinuxBridge {
    pub name: String,
}

impl LinuxBridge {
    pub fn new() -> LinuxBridge {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("m169b{}x{n}", std::process::id() % 10_000);
        meta169_testkit::ip(&["link", "add", &name, "type", "bridge"]);
        meta169_testkit::ip(&["link", "set", &name, "up"]);
        LinuxBridge { name }
    }

    pub fn attach(&self, interface: &str) {
        meta169_testkit::ip(&["link", "set", interface, "master", &self.name]);
    }
}

impl Drop for LinuxBridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.name])
            .status();
    }
}
