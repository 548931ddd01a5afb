//! `pause [--new-net --hostname NAME] [--new-ipc] [--sysctl k=v]...`: a pod sandbox's holder.
//!
//! It unshares the namespaces the pod does not take from the host (network and UTS together,
//! IPC), sets the hostname, brings loopback up, writes the pod's sysctls (inside its own
//! namespaces, so they stay the pod's), prints `ready` on stdout (or `error: <why>`) and then
//! sleeps in `sigwait` until SIGTERM or SIGINT. Containers join its namespaces through
//! `/proc/<pid>/ns/*`; it lives as long as the pod, so it is as small as the shim monitor.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

/// Runs the holder with the arguments after `pause`; returns the process exit code.
pub fn main(args: &[OsString]) -> i32 {
    match pause(args) {
        Ok(()) => 0,
        Err(message) => {
            // The runtime reads this line instead of `ready`.
            println!("error: {message}");
            1
        }
    }
}

/// The holder's parsed command line.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    flags: CloneFlags,
    hostname: Option<String>,
    sysctls: Vec<(String, String)>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            flags: CloneFlags::empty(),
            hostname: None,
            sysctls: Vec::new(),
        }
    }
}

fn parse_args(args: &[OsString]) -> Result<Args, String> {
    let mut parsed = Args::default();
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--new-net" => parsed.flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS,
            "--new-ipc" => parsed.flags |= CloneFlags::CLONE_NEWIPC,
            "--hostname" => parsed.hostname = Some(it.next().ok_or("--hostname needs a value")?),
            "--sysctl" => {
                let kv = it.next().ok_or("--sysctl needs a value")?;
                let (k, v) = kv.split_once('=').ok_or("--sysctl takes name=value")?;
                if k.is_empty() || k.contains("..") || k.contains('/') {
                    return Err(format!("invalid sysctl name {k:?}"));
                }
                parsed.sysctls.push((k.to_owned(), v.to_owned()));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

fn pause(args: &[OsString]) -> Result<(), String> {
    let Args {
        flags,
        hostname,
        sysctls,
    } = parse_args(args)?;
    // SIGTERM/SIGINT are waited for, not handled: blocked before anything can send them.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;

    nix::sched::unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    if let Some(hostname) = hostname {
        nix::unistd::sethostname(&hostname).map_err(|e| format!("sethostname: {e}"))?;
    }
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        loopback_up().map_err(|e| format!("setting lo up: {e}"))?;
    }
    for (k, v) in sysctls {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        fs::write(&path, &v).map_err(|e| format!("sysctl {k}={v}: {e}"))?;
    }
    let mut out = io::stdout().lock();
    writeln!(out, "ready").map_err(|e| format!("reporting ready: {e}"))?;
    out.flush().map_err(|e| format!("reporting ready: {e}"))?;
    drop(out);
    // Leave the report pipe: the runtime reads until it closes.
    if let Ok(null) = fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    let _ = mask.wait();
    Ok(())
}

/// Brings `lo` up in the current (new) network namespace: one rtnetlink `RTM_SETLINK` naming
/// the interface, answered by the kernel's acknowledgement.
fn loopback_up() -> Result<(), String> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| format!("netlink socket: {e}"))?;
    let request = setlink_up_request(b"lo", 1);
    let kernel = NetlinkAddr::new(0, 0);
    sendto(sock.as_raw_fd(), &request, &kernel, MsgFlags::empty())
        .map_err(|e| format!("netlink send: {e}"))?;
    let mut reply = [0u8; 1024];
    let n = recv(sock.as_raw_fd(), &mut reply, MsgFlags::empty())
        .map_err(|e| format!("netlink receive: {e}"))?;
    parse_ack(&reply[..n], 1)
}

/// An `RTM_SETLINK` request (with `NLM_F_ACK`) setting `IFF_UP` on the interface named `name`.
fn setlink_up_request(name: &[u8], seq: u32) -> Vec<u8> {
    // nlmsghdr (16) + ifinfomsg (16) + rtattr IFLA_IFNAME (4 + name + NUL, padded to 4).
    let attr_len = 4 + name.len() + 1;
    let total = 16 + 16 + attr_len.next_multiple_of(4);
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_SETLINK.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
    msg.push(libc::AF_UNSPEC as u8); // ifi_family
    msg.push(0); // padding
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&0i32.to_ne_bytes()); // ifi_index: 0, so the kernel goes by name
    msg.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes()); // ifi_change
    msg.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    msg.extend_from_slice(&libc::IFLA_IFNAME.to_ne_bytes());
    msg.extend_from_slice(name);
    msg.push(0);
    msg.resize(total, 0);
    msg
}

/// Checks the kernel's answer to request `seq`: an `NLMSG_ERROR` whose error is 0.
fn parse_ack(reply: &[u8], seq: u32) -> Result<(), String> {
    let u32_at = |i: usize| reply.get(i..i + 4).map(|b| [b[0], b[1], b[2], b[3]]);
    let (Some(_len), Some(kind), Some(got_seq), Some(error)) = (
        u32_at(0),
        reply.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]])),
        u32_at(8).map(u32::from_ne_bytes),
        u32_at(16).map(i32::from_ne_bytes),
    ) else {
        return Err(format!("short netlink reply ({} bytes)", reply.len()));
    };
    if kind != libc::NLMSG_ERROR as u16 || got_seq != seq {
        return Err(format!(
            "unexpected netlink reply (type {kind}, sequence {got_seq})"
        ));
    }
    match error {
        0 => Ok(()),
        e => Err(nix::Error::from_raw(-e).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_and_bad_ones_are_refused() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(parse_args(&[]).unwrap(), Args::default());
        let parsed = parse_args(&args(&[
            "--new-net",
            "--hostname",
            "web-0",
            "--new-ipc",
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=0",
        ]))
        .unwrap();
        assert!(parsed.flags.contains(
            CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC
        ));
        assert_eq!(parsed.hostname.as_deref(), Some("web-0"));
        assert_eq!(
            parsed.sysctls,
            [(
                "net.ipv4.ip_unprivileged_port_start".to_owned(),
                "0".to_owned()
            )]
        );
        for (bad, wanted) in [
            (&["--hostname"][..], "--hostname needs a value"),
            (&["--sysctl"], "--sysctl needs a value"),
            (&["--sysctl", "novalue"], "name=value"),
            (&["--sysctl", "net/../x=1"], "invalid sysctl name"),
            (&["--bogus"], "unknown argument"),
        ] {
            let err = parse_args(&args(bad)).unwrap_err();
            assert!(err.contains(wanted), "{bad:?}: {err}");
        }
        // An unknown argument is reported on stdout as `error: ...`, exit code 1.
        assert_eq!(main(&args(&["--bogus"])), 1);
    }

    #[test]
    fn the_setlink_request_is_laid_out_as_rtnetlink_expects() {
        let msg = setlink_up_request(b"lo", 7);
        assert_eq!(msg.len(), 40);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 40);
        assert_eq!(
            u16::from_ne_bytes(msg[4..6].try_into().unwrap()),
            libc::RTM_SETLINK
        );
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(msg[24..28].try_into().unwrap()), 1); // IFF_UP
        assert_eq!(u16::from_ne_bytes(msg[32..34].try_into().unwrap()), 7); // rta_len
        assert_eq!(&msg[36..40], b"lo\0\0");
    }

    #[test]
    fn acknowledgements_and_errors_are_read() {
        let ack = |seq: u32, error: i32| {
            let mut r = Vec::new();
            r.extend_from_slice(&36u32.to_ne_bytes());
            r.extend_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
            r.extend_from_slice(&0u16.to_ne_bytes());
            r.extend_from_slice(&seq.to_ne_bytes());
            r.extend_from_slice(&0u32.to_ne_bytes());
            r.extend_from_slice(&error.to_ne_bytes());
            r.extend_from_slice(&[0; 16]);
            r
        };
        parse_ack(&ack(1, 0), 1).unwrap();
        let err = parse_ack(&ack(1, -libc::EPERM), 1).unwrap_err();
        assert!(err.contains("EPERM"), "{err}");
        assert!(parse_ack(&ack(2, 0), 1).unwrap_err().contains("sequence 2"));
        assert!(parse_ack(&[0; 8], 1).unwrap_err().contains("short"));
    }
}
