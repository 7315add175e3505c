//! Hostile requests for the spoofing tests: a guest claiming another
//! instance's identity with every header trick it has (the other's signed
//! headers with and without a valid signature, `X-Forwarded-For` lists,
//! spaces, IPv4-mapped IPv6 and duplicates, network-id headers, letter
//! case, repeated and folded headers) on plain and encoded paths. The
//! tests send them from a guest's own address and count what came back.

use rand::seq::SliceRandom;
use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Whom the guest pretends to be.
pub struct Victim {
    pub instance_id: String,
    pub project_id: String,
    /// `X-Instance-ID-Signature` of the victim's id with the real secret.
    pub valid_signature: String,
    /// The victim's addresses (on its own network, maybe equal to the
    /// guest's on another).
    pub addresses: Vec<String>,
    pub network_id: String,
}

/// Paths whose answers carry the caller's own data, and encoded or
/// roundabout spellings of them.
const PATHS: &[&str] = &[
    "/openstack/latest/meta_data.json",
    "/openstack/2018-08-27/meta_data.json",
    "/latest/meta-data/instance-id",
    "/latest/meta-data/hostname",
    "/openstack/latest/password",
    "/2009-04-04/meta-data/instance-id",
    "/openstack/latest/meta%5Fdata.json",
    "/%6Fpenstack/latest/meta_data.json",
    "/openstack/latest/../latest/meta_data.json",
    "/openstack/latest/%2e%2e/latest/meta_data.json",
    "//latest/meta-data/instance-id",
    "/latest//meta-data/hostname",
    "/latest/meta-data/instance-id?instance=other",
    "/latest/meta-data/instance-id%00",
    "/latest/meta-data/hostname/",
];

/// One hostile request: a path and the guest's headers, in order, some
/// possibly folded onto the previous line.
pub struct Attack {
    pub path: &'static str,
    pub headers: Vec<(String, String)>,
    /// Continue the last header on a new line (obsolete line folding).
    pub folded: Option<String>,
}

fn random_case(rng: &mut impl Rng, name: &str) -> String {
    match rng.gen_range(0..4) {
        0 => name.to_ascii_lowercase(),
        1 => name.to_ascii_uppercase(),
        2 => name.to_string(),
        _ => name
            .chars()
            .map(|c| {
                if rng.gen_bool(0.5) {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
    }
}

/// The victim's address as a guest might spell it.
fn spelled_address(rng: &mut impl Rng, victim: &Victim) -> String {
    let address = victim
        .addresses
        .choose(rng)
        .cloned()
        .unwrap_or_else(|| "10.0.0.1".into());
    let mapped = match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("::ffff:{v4}"),
        _ => address.clone(),
    };
    match rng.gen_range(0..7) {
        0 => address,
        1 => format!(" {address} "),
        2 => mapped,
        3 => format!("{address}, {address}"),
        4 => format!("{address},10.255.255.254"),
        5 => format!("10.255.255.254, {address}"),
        _ => format!("{address}:8080"),
    }
}

/// A random hostile request against `victim`.
pub fn attack(rng: &mut impl Rng, victim: &Victim) -> Attack {
    let mut headers = Vec::new();
    let tricks = rng.gen_range(1..=4);
    for _ in 0..tricks {
        let (name, value) = match rng.gen_range(0..8) {
            0 | 1 => {
                let signature = match rng.gen_range(0..3) {
                    0 => victim.valid_signature.clone(),
                    1 => "0".repeat(64),
                    _ => victim.valid_signature.to_ascii_uppercase(),
                };
                headers.push((random_case(rng, "X-Tenant-ID"), victim.project_id.clone()));
                headers.push((random_case(rng, "X-Instance-ID-Signature"), signature));
                ("X-Instance-ID", victim.instance_id.clone())
            }
            2 | 3 => ("X-Forwarded-For", spelled_address(rng, victim)),
            4 => ("X-OVN-Network-ID", victim.network_id.clone()),
            5 => ("X-Neutron-Network-ID", victim.network_id.clone()),
            6 => ("X-Instance-ID", format!(" {} ", victim.instance_id)),
            _ => ("Forwarded", format!("for={}", spelled_address(rng, victim))),
        };
        let name = random_case(rng, name);
        // Sometimes the same header twice.
        if rng.gen_bool(0.2) {
            headers.push((name.clone(), value.clone()));
        }
        headers.push((name, value));
    }
    headers.shuffle(rng);
    let folded = rng
        .gen_bool(0.05)
        .then(|| victim.addresses.first().cloned().unwrap_or_default());
    Attack {
        path: PATHS.choose(rng).copied().unwrap_or("/"),
        headers,
        folded,
    }
}

impl Attack {
    /// The request's bytes, the guest's headers first and then `appended`
    /// (what a proxy between guest and server adds).
    pub fn request(&self, method: &str, host: &str, appended: &[(String, String)]) -> Vec<u8> {
        let mut text = format!("{method} {} HTTP/1.1\r\nHost: {host}\r\n", self.path);
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(fold) = &self.folded {
            text.push_str(&format!(" {fold}\r\n"));
        }
        for (name, value) in appended {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = if method == "POST" { "spoofed" } else { "" };
        text.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        text.into_bytes()
    }
}

/// What a run of attacks got back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub sent: usize,
    /// 200 with the guest's own data.
    pub own: usize,
    /// Another 200 (neither's markers).
    pub other: usize,
    /// Refused: 4xx or 5xx.
    pub refused: usize,
    /// Any answer carrying one of the victim's markers: must stay 0.
    pub crossed: usize,
    /// No HTTP answer at all (connection closed on a malformed head).
    pub closed: usize,
}

impl Tally {
    /// Count one answer: `own` and `victim` are markers only the guest's
    /// and only the victim's data contain.
    pub fn add(&mut self, answer: &std::io::Result<(u16, String)>, own: &[&str], victim: &[&str]) {
        self.sent += 1;
        match answer {
            Ok((status, body)) => {
                if victim.iter().any(|m| body.contains(m)) {
                    self.crossed += 1;
                } else if *status == 200 && own.iter().any(|m| body.contains(m)) {
                    self.own += 1;
                } else if *status == 200 {
                    self.other += 1;
                } else if *status == 0 {
                    self.closed += 1;
                } else {
                    self.refused += 1;
                }
            }
            Err(_) => self.closed += 1,
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.own += other.own;
        self.other += other.other;
        self.refused += other.refused;
        self.crossed += other.crossed;
        self.closed += other.closed;
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent: {} answered with the guest's own data, {} other 200s, {} refused, {} closed unanswered, {} crossed to the other instance",
            self.sent, self.own, self.other, self.refused, self.closed, self.crossed
        )
    }
}

/// A run of attacks against one target, from several threads (spawned
/// from the calling thread, so inside its network namespace).
pub struct Barrage {
    pub target: SocketAddr,
    /// The address to send from; `None`: the namespace's own.
    pub source: Option<IpAddr>,
    pub count: usize,
    pub threads: usize,
    /// Each thread's generator starts from `seed + its number`.
    pub seed: u64,
    /// Share of the attacks sent as POSTs (password writes).
    pub post_share: f64,
    /// Guest headers a proxy on the way removes (any letter case).
    pub removed: Vec<&'static str>,
    /// Headers a proxy on the way appends after the guest's.
    pub appended: Vec<(String, String)>,
}

impl Barrage {
    /// Send the attacks; count answers by the guest's (`own`) and the
    /// victim's (`theirs`) markers.
    pub fn run(
        &self,
        victim: &std::sync::Arc<Victim>,
        own: &'static [&'static str],
        theirs: &'static [&'static str],
    ) -> Tally {
        use rand::SeedableRng;
        let per_thread = self.count.div_ceil(self.threads.max(1));
        let threads: Vec<_> = (0..self.threads.max(1))
            .map(|t| {
                let victim = victim.clone();
                let (target, source, post_share) = (self.target, self.source, self.post_share);
                let (removed, appended) = (self.removed.clone(), self.appended.clone());
                let seed = self.seed + t as u64;
                std::thread::spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                    let mut tally = Tally::default();
                    for _ in 0..per_thread {
                        let mut attack = attack(&mut rng, &victim);
                        attack.headers.retain(|(name, _)| {
                            !removed.iter().any(|r| name.eq_ignore_ascii_case(r))
                        });
                        let method = if rng.gen_bool(post_share) {
                            "POST"
                        } else {
                            "GET"
                        };
                        let request = attack.request(method, "169.254.169.254", &appended);
                        let answer = crate::send_from(
                            source,
                            target,
                            &request,
                            Duration::from_secs(10),
                            Duration::from_secs(10),
                        );
                        tally.add(&answer, own, theirs);
                    }
                    tally
                })
            })
            .collect();
        let mut tally = Tally::default();
        for thread in threads {
            if let Ok(t) = thread.join() {
                tally.merge(t);
            }
        }
        tally
    }
}
