//! The lab's plumbing without flotilla: reachability through the probe and across the bridge,
//! isolate/heal, moving a host, mDNS-style multicast staying inside the lab, and cleanup.
//! Sockets "inside" a host are opened on a thread that entered the host's namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use flotilla_lab::wait::wait_for;
use flotilla_lab::Lab;

const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

fn skip() -> bool {
    if let Some(reason) = Lab::unavailable_reason() {
        eprintln!("SKIPPED: the network-namespace lab is unavailable here: {reason}");
        return true;
    }
    false
}

/// Run `f` on a thread inside network namespace `netns`; sockets it opens stay in it.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns on a valid fd; it only changes this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in netns")
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500))
}

/// A TCP round trip to `listener` from the current namespace.
fn round_trip(listener: &TcpListener) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let mut out = connect(addr)?;
    out.write_all(b"ping")?;
    let (mut inbound, _) = listener.accept()?;
    let mut buf = [0u8; 4];
    inbound.read_exact(&mut buf)?;
    anyhow::ensure!(&buf == b"ping", "garbled");
    Ok(())
}

fn multicast_receiver(iface: Ipv4Addr, port: u16) -> UdpSocket {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind udp");
    socket.join_multicast_v4(&GROUP, &iface).expect("join group");
    socket.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    socket
}

fn multicast_send(iface: Ipv4Addr, port: u16, payload: &[u8]) {
    let socket = UdpSocket::bind((iface, 0)).expect("bind sender");
    let addr = libc::in_addr { s_addr: u32::from(iface).to_be() };
    // SAFETY: IP_MULTICAST_IF with a properly sized in_addr on a valid socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            &addr as *const libc::in_addr as *const libc::c_void,
            std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_MULTICAST_IF: {}", std::io::Error::last_os_error());
    socket.send_to(payload, (GROUP, port)).expect("multicast send");
}

/// Payloads received by `socket` until its read timeout.
fn drain(socket: &UdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

fn ip_output(args: &[&str]) -> String {
    String::from_utf8(Command::new("ip").args(args).output().expect("ip").stdout).expect("utf8")
}

#[test]
fn lab_connects_isolates_moves_and_cleans_up() {
    if skip() {
        return;
    }
    let lab = Lab::new(3).expect("lab");
    let (tag, names) = (lab.tag().to_string(), (0..3).map(|h| lab.netns(h).to_string()).collect::<Vec<_>>());
    let probe_addr = lab.probe_addr();
    let netns_list = ip_output(&["netns", "list"]);
    for n in names.iter().chain([&lab.switch_netns().to_string()]) {
        assert!(netns_list.contains(n.as_str()), "{n} missing from {netns_list}");
    }

    // The probe reaches every host; hosts reach each other across the bridge.
    let listeners: Vec<TcpListener> = (0..3)
        .map(|h| {
            let addr = SocketAddr::from((lab.ip(h), 9000));
            in_netns(lab.netns(h), move || TcpListener::bind(addr).expect("bind in host"))
        })
        .collect();
    for (h, l) in listeners.iter().enumerate() {
        wait_for("the probe to reach a host", Duration::from_secs(10), Duration::from_millis(50), || round_trip(l))
            .unwrap_or_else(|e| panic!("host {h}: {e:#}"));
    }
    let to_h1 = listeners[1].try_clone().expect("clone");
    in_netns(lab.netns(0), move || {
        wait_for("host 0 to reach host 1", Duration::from_secs(10), Duration::from_millis(50), || round_trip(&to_h1))
            .expect("across the bridge")
    });

    // Isolate cuts the host off; heal reconnects it.
    lab.isolate(1).expect("isolate");
    assert!(connect(listeners[1].local_addr().unwrap()).is_err(), "isolated host still reachable");
    lab.heal(1).expect("heal");
    wait_for("host 1 reachable after heal", Duration::from_secs(10), Duration::from_millis(50), || {
        round_trip(&listeners[1])
    })
    .expect("healed");

    // Moving a host: the new address serves, the old one is gone.
    let old = lab.ip(2);
    let new = lab.set_address(2, 77).expect("set_address");
    assert_eq!(lab.ip(2), new);
    assert_eq!(new.octets()[3], 77);
    assert!(lab.set_address(1, 77).is_err(), "two hosts on one address");
    drop(listeners);
    let moved = in_netns(lab.netns(2), move || TcpListener::bind((new, 9000)).expect("bind on the new address"));
    wait_for("the moved host", Duration::from_secs(10), Duration::from_millis(50), || round_trip(&moved))
        .expect("new address reachable");
    assert!(connect(SocketAddr::from((old, 9000))).is_err(), "old address still answers");

    // Multicast (what mDNS uses) crosses the bridge between hosts but never the probe.
    let port = 40000 + (std::process::id() % 20000) as u16;
    let (ip0, ip1) = (lab.ip(0), lab.ip(1));
    let in_h1 = in_netns(lab.netns(1), move || multicast_receiver(ip1, port));
    let in_root = multicast_receiver(probe_addr, port);
    in_netns(lab.netns(0), move || multicast_send(ip0, port, b"from-host"));
    multicast_send(probe_addr, port, b"from-root");
    let h1_got = drain(&in_h1);
    let root_got = drain(&in_root);
    assert!(h1_got.contains(&b"from-host".to_vec()), "multicast between hosts: {h1_got:?}");
    assert!(!h1_got.contains(&b"from-root".to_vec()), "multicast leaked into the lab: {h1_got:?}");
    assert!(!root_got.contains(&b"from-host".to_vec()), "multicast leaked out of the lab: {root_got:?}");

    drop((in_h1, in_root, moved));
    drop(lab);
    let netns_list = ip_output(&["netns", "list"]);
    assert!(!netns_list.contains(&format!("flab-{tag}-")), "namespaces left behind: {netns_list}");
    assert!(!ip_output(&["-o", "link", "show"]).contains(&format!(" flp{tag}@")), "probe link left behind");
    let lo = ip_output(&["-4", "-o", "addr", "show", "dev", "lo"]);
    assert!(
        !lo.split_whitespace().any(|w| w.trim_end_matches('\\') == format!("lo:f{tag}")),
        "probe address left: {lo}"
    );
}

#[test]
fn labs_in_one_process_get_distinct_subnets() {
    if skip() {
        return;
    }
    let a = Lab::new(1).expect("lab a");
    let b = Lab::new(1).expect("lab b");
    assert_ne!(a.subnet(), b.subnet());
    assert_ne!(a.netns(0), b.netns(0));
}
