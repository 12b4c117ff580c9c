public import VPNKitBase

/// Parses hosts-file text (hosts(5)): each line holds an address and one or more names, separated
/// by spaces or tabs; `#` starts a comment. Only lines whose address is IPv4 dotted-quad are kept
/// (IPv6 and malformed lines are skipped). Entries come in file order, one per name, so a name may
/// appear more than once; the first one is the one a hosts file means.
public func parseHostsFile(_ text: String) -> [(name: String, address: IPv4Address)] {
    var entries: [(name: String, address: IPv4Address)] = []
    for line in configurationLines(text, commentMarkers: ["#"]) {
        guard let first = line.first, let address = IPv4Address(first) else { continue }
        for name in line.dropFirst() {
            entries.append((name: String(name), address: address))
        }
    }
    return entries
}

/// Parses resolv.conf text (resolv.conf(5)) and returns its `nameserver` lines whose address is
/// IPv4, in order, on port 53. IPv6 servers are skipped; loopback ones (127.0.0.53, a local stub)
/// are kept: whether they are reachable is the caller's decision. `#` and `;` start comments.
public func parseResolvConf(_ text: String) -> [DNSUpstream] {
    var upstreams: [DNSUpstream] = []
    for line in configurationLines(text, commentMarkers: ["#", ";"]) {
        guard line.count >= 2, line[0] == "nameserver", let address = IPv4Address(line[1]) else { continue }
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
