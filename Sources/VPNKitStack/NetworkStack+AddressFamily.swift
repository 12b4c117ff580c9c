// Address families at the socket API: identities are `IPAddress` (either family); IPv6 works when
// the stack's configuration turns it on. What reaches a stack without it is refused here, typed
// and counted.

public import VPNKitBase

extension NetworkStack {
    /// Whether `address` is one of the stack's addresses.
    public func owns(_ address: IPAddress) -> Bool {
        switch address {
        case .v4(let v4): return owns(v4)
        case .v6(let v6): return ipv6?.owns(v6) ?? false
        }
    }

    /// The IPv4 address `address` holds; for any other family, counts
    /// `addressFamilyNotSupported` and throws it.
    func requireIPv4(_ address: IPAddress) throws(StackError) -> IPv4Address {
        guard case .v4(let v4) = address else {
            counters.increment(.addressFamilyNotSupported)
            throw .addressFamilyNotSupported(address)
        }
        return v4
    }

    /// Throws (and counts) `addressFamilyNotSupported` for an IPv6 address on a stack without IPv6.
    func requireSupportedFamily(_ address: IPAddress) throws(StackError) {
        if case .v6 = address, ipv6 != nil { return }
        _ = try requireIPv4(address)
    }
}

extension NetworkStack {
    /// Makes the stack own one more IPv6 address (the NAT's IPv6 host alias): neighbour
    /// solicitations for it are answered and its solicited-node group listened to. Returns false,
    /// owning nothing, when IPv6 is off or `address` is not in the prefix.
    @discardableResult
    public func addIPv6Address(_ address: IPv6Address) -> Bool {
        guard let link = ipv6?.configuration, address.high == link.prefix.high, !address.isMulticast else { return false }
        ipv6?.add(address)
        return true
    }
}
