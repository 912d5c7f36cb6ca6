//! Guest networking requested by the shim (`UpdateInterface`, `UpdateRoutes`,
//! `AddARPNeighbors`), done over rtnetlink.

use std::net::IpAddr;

use async_trait::async_trait;
use futures::TryStreamExt;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::RouteScope;

use crate::protocols::types::{ARPNeighbor, IPAddress, Interface, Route};

/// Errors of network configuration.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network request: {0}")]
    Invalid(String),
    #[error("no interface matches {0}")]
    NoSuchLink(String),
    #[error("netlink: {0}")]
    Netlink(String),
}

impl From<rtnetlink::Error> for NetworkError {
    fn from(e: rtnetlink::Error) -> Self {
        NetworkError::Netlink(e.to_string())
    }
}

/// Network configuration of the guest.
#[async_trait]
pub trait Network: Send + Sync + std::fmt::Debug {
    async fn update_interface(&self, iface: &Interface) -> Result<Interface, NetworkError>;
    async fn update_routes(&self, routes: &[Route]) -> Result<Vec<Route>, NetworkError>;
    async fn add_arp_neighbors(&self, neighbors: &[ARPNeighbor]) -> Result<(), NetworkError>;
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<Vec<u8>, NetworkError> {
    let bytes: Result<Vec<u8>, _> = s.split(':').map(|b| u8::from_str_radix(b, 16)).collect();
    match bytes {
        Ok(b) if b.len() == 6 => Ok(b),
        _ => Err(NetworkError::Invalid(format!("bad MAC address {s:?}"))),
    }
}

/// Parses an address and its prefix length (`mask` is a length, as Kata sends it).
pub fn parse_ip(a: &IPAddress) -> Result<(IpAddr, u8), NetworkError> {
    let ip: IpAddr = a
        .address
        .parse()
        .map_err(|_| NetworkError::Invalid(format!("bad IP address {:?}", a.address)))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if a.mask.is_empty() {
        max
    } else {
        a.mask
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| NetworkError::Invalid(format!("bad prefix length {:?}", a.mask)))?
    };
    Ok((ip, len))
}

/// Parses `10.0.0.0/24` (or a bare address, or "default"/"").
pub fn parse_cidr(s: &str) -> Result<Option<(IpAddr, u8)>, NetworkError> {
    if s.is_empty() || s == "default" {
        return Ok(None);
    }
    let (addr, len) = s.split_once('/').unwrap_or((s, ""));
    let mut a = IPAddress::new();
    a.address = addr.into();
    a.mask = len.into();
    parse_ip(&a).map(Some)
}

/// rtnetlink on the agent's (the VM's) network namespace.
#[derive(Debug, Default)]
pub struct RtNetlink;

impl RtNetlink {
    fn handle() -> Result<rtnetlink::Handle, NetworkError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetworkError::Netlink(e.to_string()))?;
        tokio::spawn(conn);
        Ok(handle)
    }

    /// Index of the link with this MAC address (preferred, names can change) or name.
    async fn find_link(
        handle: &mut rtnetlink::Handle,
        mac: &str,
        name: &str,
    ) -> Result<u32, NetworkError> {
        let mac = if mac.is_empty() {
            None
        } else {
            Some(parse_mac(mac)?)
        };
        let mut links = handle.link().get().execute();
        while let Some(l) = links.try_next().await? {
            let matches = l.attributes.iter().any(|a| match a {
                LinkAttribute::Address(b) => mac.as_deref() == Some(b.as_slice()),
                LinkAttribute::IfName(n) => mac.is_none() && n == name,
                _ => false,
            });
            if matches {
                return Ok(l.header.index);
            }
        }
        Err(NetworkError::NoSuchLink(format!(
            "hwaddr {mac:?} / name {name:?}"
        )))
    }
}

#[async_trait]
impl Network for RtNetlink {
    async fn update_interface(&self, iface: &Interface) -> Result<Interface, NetworkError> {
        let mut h = Self::handle()?;
        let index = Self::find_link(&mut h, &iface.hwAddr, &iface.name).await?;
        let addrs: Vec<(IpAddr, u8)> = iface
            .IPAddresses
            .iter()
            .map(parse_ip)
            .collect::<Result<_, _>>()?;
        h.link().set(index).down().execute().await?;
        // Replace the addresses wholesale, as Kata's agent does.
        let mut old = h.address().get().set_link_index_filter(index).execute();
        let mut stale = Vec::new();
        while let Some(a) = old.try_next().await? {
            stale.push(a);
        }
        for a in stale {
            h.address().del(a).execute().await?;
        }
        for (ip, len) in addrs {
            h.address().add(index, ip, len).execute().await?;
        }
        let mut set = h.link().set(index);
        if iface.mtu > 0 {
            let mtu = u32::try_from(iface.mtu)
                .map_err(|_| NetworkError::Invalid(format!("mtu {}", iface.mtu)))?;
            set = set.mtu(mtu);
        }
        if !iface.name.is_empty() {
            set = set.name(iface.name.clone());
        }
        set.up().execute().await?;
        Ok(iface.clone())
    }

    async fn update_routes(&self, routes: &[Route]) -> Result<Vec<Route>, NetworkError> {
        let mut h = Self::handle()?;
        // Link-scope routes first: gateways must be reachable before routes via them.
        let mut ordered: Vec<&Route> = routes.iter().collect();
        ordered.sort_by_key(|r| !r.gateway.is_empty());
        for r in ordered {
            let index = Self::find_link(&mut h, "", &r.device).await?;
            let dest = parse_cidr(&r.dest)?;
            let gw = parse_cidr(&r.gateway)?.map(|(ip, _)| ip);
            let scope = RouteScope::from(u8::try_from(r.scope).unwrap_or(0));
            let req = h
                .route()
                .add()
                .output_interface(index)
                .scope(scope)
                .replace();
            match (dest, gw) {
                (Some((IpAddr::V6(d), l)), g) => {
                    let mut q = req.v6().destination_prefix(d, l);
                    if let Some(IpAddr::V6(g)) = g {
                        q = q.gateway(g);
                    }
                    q.execute().await?;
                }
                (d, g) => {
                    let mut q = req.v4();
                    if let Some((IpAddr::V4(d), l)) = d {
                        q = q.destination_prefix(d, l);
                    }
                    if let Some(IpAddr::V4(g)) = g {
                        q = q.gateway(g);
                    }
                    q.execute().await?;
                }
            }
        }
        Ok(routes.to_vec())
    }

    async fn add_arp_neighbors(&self, neighbors: &[ARPNeighbor]) -> Result<(), NetworkError> {
        let mut h = Self::handle()?;
        for n in neighbors {
            let index = Self::find_link(&mut h, "", &n.device).await?;
            let to = n
                .toIPAddress
                .as_ref()
                .ok_or_else(|| NetworkError::Invalid("neighbor without address".into()))?;
            let (ip, _) = parse_ip(to)?;
            let mac = parse_mac(&n.lladdr)?;
            let state = NeighbourState::from(u16::try_from(n.state).unwrap_or(0x80));
            h.neighbours()
                .add(index, ip)
                .link_local_address(&mac)
                .state(state)
                .replace()
                .execute()
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse_mac("02:00:ca:fe:00:01").unwrap(),
            vec![2, 0, 0xca, 0xfe, 0, 1]
        );
        assert!(parse_mac("02:00").is_err());
        let mut a = IPAddress::new();
        a.address = "10.0.2.15".into();
        a.mask = "24".into();
        assert_eq!(parse_ip(&a).unwrap(), ("10.0.2.15".parse().unwrap(), 24));
        a.mask = "33".into();
        assert!(parse_ip(&a).is_err());
        assert_eq!(parse_cidr("default").unwrap(), None);
        assert_eq!(
            parse_cidr("fd00::/64").unwrap(),
            Some(("fd00::".parse().unwrap(), 64))
        );
    }

    /// Real netlink in a fresh network namespace: bring `lo` up with an address.
    #[test]
    fn update_interface_in_own_netns() {
        let t = std::thread::spawn(|| {
            if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                eprintln!("SKIPPED: cannot unshare a network namespace (needs root)");
                return;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut iface = Interface::new();
                iface.name = "lo".into();
                let mut a = IPAddress::new();
                a.address = "127.0.0.9".into();
                a.mask = "8".into();
                iface.IPAddresses.push(a);
                iface.mtu = 1500;
                RtNetlink.update_interface(&iface).await.unwrap();
                let mut n = ARPNeighbor::new();
                let mut to = IPAddress::new();
                to.address = "127.0.0.10".into();
                n.toIPAddress = Some(to).into();
                n.device = "lo".into();
                n.lladdr = "02:00:00:00:00:01".into();
                n.state = 0x80;
                // lo has NOARP: the kernel may refuse; what matters is a clean error.
                let _ = RtNetlink.add_arp_neighbors(&[n]).await;
                let mut r = Route::new();
                r.dest = "10.9.0.0/16".into();
                r.device = "lo".into();
                RtNetlink.update_routes(&[r]).await.unwrap();
                let mut h = RtNetlink::handle().unwrap();
                let index = RtNetlink::find_link(&mut h, "", "lo").await.unwrap();
                let mut addrs = h.address().get().set_link_index_filter(index).execute();
                let mut found = false;
                while let Some(a) = addrs.try_next().await.unwrap() {
                    found |= a.attributes.iter().any(|x| {
                        matches!(x, netlink_packet_route::address::AddressAttribute::Address(ip)
                            if *ip == "127.0.0.9".parse::<IpAddr>().unwrap())
                    });
                }
                assert!(found, "address not configured");
            });
        });
        t.join().unwrap();
    }
}
