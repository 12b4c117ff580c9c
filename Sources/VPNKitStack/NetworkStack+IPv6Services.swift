// What services on the gateway change about the stack's IPv6 side: multicast groups they listen
// to, and the flags of the router advertisements.

public import VPNKitBase

extension NetworkStack {
    /// Listens to the multicast `group` on the link (ff02::1:2 for a DHCPv6 server, say): packets to it
    /// are accepted and handed to UDP sockets bound on `::`. Returns false, doing nothing, on a stack
    /// without IPv6 or for an address that is not multicast.
    @discardableResult
    public func joinIPv6MulticastGroup(_ group: IPv6Address) -> Bool {
        guard ipv6 != nil, group.isMulticast else { return false }
        ipv6?.join(group)
        return true
    }

    /// Whether the router advertisements carry the O flag (other configuration by DHCPv6); false
    /// without IPv6. Setting it on a stack without IPv6 does nothing; the next advertisement says it.
    public var advertisesOtherConfiguration: Bool {
        get { ipv6?.configuration.otherConfiguration ?? false }
        set { ipv6?.configuration.otherConfiguration = newValue }
    }
}
