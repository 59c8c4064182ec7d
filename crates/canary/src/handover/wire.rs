//! Listening sockets across a Unix socket: one message whose bytes name each socket (a 4-byte
//! length, then a JSON list) and whose `SCM_RIGHTS` carries the sockets in the same order.

use std::io::{IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use anyhow::{Context, bail};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// The most sockets one hand-over carries: Linux passes at most 253 descriptors a message.
pub const MAX_SOCKETS: usize = 250;
/// The longest list of names read.
const MAX_NAMES_BYTES: usize = 64 * 1024;

/// Sends `sockets`, each under its name.
pub fn send(stream: &UnixStream, sockets: &[(String, std::net::TcpListener)]) -> anyhow::Result<()> {
    if sockets.len() > MAX_SOCKETS {
        bail!("{} listening sockets are more than one hand-over carries ({MAX_SOCKETS})", sockets.len());
    }
    let names: Vec<&str> = sockets.iter().map(|(name, _)| name.as_str()).collect();
    let names = serde_json::to_vec(&names)?;
    let mut bytes = u32::try_from(names.len())?.to_be_bytes().to_vec();
    bytes.extend_from_slice(&names);
    let fds: Vec<_> = sockets.iter().map(|(_, socket)| socket.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        bail!("cannot fit {} sockets in one message", fds.len());
    }
    let sent = rustix::net::sendmsg(stream, &[IoSlice::new(&bytes)], &mut control, SendFlags::empty())
        .context("cannot send the listening sockets")?;
    // The descriptors went with the first byte; the rest of the names may follow as plain bytes.
    std::io::Write::write_all(&mut &*stream, &bytes[sent..]).context("cannot send the sockets' names")?;
    Ok(())
}

/// Receives what [`send`] sent: each socket with its name.
pub fn receive(stream: &UnixStream) -> anyhow::Result<Vec<(String, OwnedFd)>> {
    let mut buffer = vec![0u8; 4 + MAX_NAMES_BYTES];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received =
        rustix::net::recvmsg(stream, &mut [IoSliceMut::new(&mut buffer)], &mut control, RecvFlags::CMSG_CLOEXEC)
            .context("cannot receive the listening sockets")?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let mut have = received.bytes;
    if have < 4 {
        bail!("the running process closed the hand-over without sending its sockets");
    }
    let length = u32::from_be_bytes(buffer[..4].try_into()?) as usize;
    if length > MAX_NAMES_BYTES {
        bail!("the sockets' names are {length} bytes, more than {MAX_NAMES_BYTES}");
    }
    if have < 4 + length {
        (&*stream).read_exact(&mut buffer[have..4 + length]).context("the sockets' names were cut short")?;
        have = 4 + length;
    }
    let names: Vec<String> = serde_json::from_slice(&buffer[4..have]).context("unreadable socket names")?;
    if names.len() != fds.len() {
        bail!("{} socket names for {} sockets", names.len(), fds.len());
    }
    Ok(names.into_iter().zip(fds).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_arrive_under_their_names_and_still_listen() {
        let listeners: Vec<(String, std::net::TcpListener)> = ["admin", "web", "web"]
            .iter()
            .map(|name| (name.to_string(), std::net::TcpListener::bind("127.0.0.1:0").unwrap()))
            .collect();
        let addrs: Vec<_> = listeners.iter().map(|(_, l)| l.local_addr().unwrap()).collect();
        let (old, new) = UnixStream::pair().unwrap();
        send(&old, &listeners).unwrap();
        drop(listeners);
        let received = receive(&new).unwrap();
        let names: Vec<&str> = received.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["admin", "web", "web"]);
        for ((_, fd), addr) in received.into_iter().zip(addrs) {
            let listener = std::net::TcpListener::from(fd);
            assert_eq!(listener.local_addr().unwrap(), addr);
            let _client = std::net::TcpStream::connect(addr).expect("the socket still listens in its new owner");
            listener.accept().expect("and its queue is there");
        }
    }

    #[test]
    fn a_peer_that_hangs_up_is_an_error_not_an_empty_hand_over() {
        let (old, new) = UnixStream::pair().unwrap();
        drop(old);
        let error = receive(&new).unwrap_err().to_string();
        assert!(error.contains("without sending its sockets"), "{error}");
    }
}
