public import VPNKitBase

/// Parses hosts-file text (hosts(5)): each line holds an address and one or more names, separated
/// by spaces or tabs; `#` starts a comment. Lines whose address is an IPv4 dotted quad or IPv6 text
/// are kept; malformed lines, and IPv6 addresses with a zone (`fe80::1%eth0`), are skipped. Entries
/// come in file order, one per name, so a name may appear more than once; the first one of each
/// family is the one a hosts file means. See `isServedHostsAddress(_:)` for the ones worth serving.
public func parseHostsFile(_ text: String) -> [(name: String, address: IPAddress)] {
    var entries: [(name: String, address: IPAddress)] = []
    for line in configurationLines(text, commentMarkers: ["#"]) {
        guard let first = line.first, let address = IPAddress(first) else { continue }
        for name in line.dropFirst() {
            entries.append((name: String(name), address: address))
        }
    }
    return entries
}

/// Whether a hosts-file address means something to a guest: not loopback (127/8, `::1`: the host
/// itself), not unspecified, and for IPv6 not in fe00::/7 (link-local fe80::/10, whose link is the
/// host's, the deprecated site-local fec0::/10, the reserved fe00::/9, and multicast ff00::/8, as in
/// Debian's `ff02::1 ip6-allnodes`).
public func isServedHostsAddress(_ address: IPAddress) -> Bool {
    switch address {
    case .v4(let v4): return !v4.isLoopback && v4 != .any
    case .v6(let v6): return !v6.isLoopback && !v6.isUnspecified && v6.high >> 57 != 0xFE >> 1
    }
}

/// Parses resolv.conf text (resolv.conf(5)) and returns its `nameserver` lines, IPv4 and IPv6, in
/// order, on port 53. Skipped: malformed addresses, IPv6 addresses with a zone (`fe80::1%eth0`)
/// and IPv6 link-local ones without (a host socket cannot name their link), and IPv4-mapped ones.
/// Loopback servers (127.0.0.53, a local stub; `::1`) are kept: whether they are reachable is the
/// caller's decision. `#` and `;` start comments.
public func parseResolvConf(_ text: String) -> [DNSUpstream] {
    var upstreams: [DNSUpstream] = []
    for line in configurationLines(text, commentMarkers: ["#", ";"]) {
        guard line.count >= 2, line[0] == "nameserver", let address = IPAddress(line[1]) else { continue }
        if case .v6(let v6) = address, v6.isLinkLocal || v6.isMulticast || v6.isUnspecified || v6.ipv4Mapped != nil { continue }
        upstreams.append(DNSUpstream(address: address))
    }
    return upstreams
}

/// The non-empty lines of `text` with comments removed, each split into whitespace-separated words.
func configurationLines(_ text: String, commentMarkers: Set<Character>) -> [[Substring]] {
    text.split(whereSeparator: \.isNewline).compactMap { rawLine in
        let line = rawLine.prefix { !commentMarkers.contains($0) }
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        return words.isEmpty ? nil : words
    }
}
