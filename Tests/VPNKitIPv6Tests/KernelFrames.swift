// IPv6 frames the Linux kernel sent, captured with tshark on a veth pair between two network
// namespaces made for the purpose (fd00:65::3 pinging, sending UDP to and connecting to fd00:65::1;
// both sides' link-local DAD, router solicitations and MLDv2 reports as they came up). Each is the
// whole Ethernet frame in hex. The UDP and TCP ones were captured with transmit checksum offload
// off (`ethtool -K va tx off`): with it on, a veth carries them with only the pseudo-header's sum.

import NIOCore
import VPNKitBase

enum KernelFrames {
    /// DAD: a neighbour solicitation for fd00:65::1 from ::, with the nonce option (type 14).
    static let dadSolicitation = "3333ff00000136425c536b5586dd6000000000203aff00000000000000000000000000000000ff0200000000000000000001ff0000018700455d00000000fd0000650000000000000000000000010e0127e215ecec0b"
    /// An MLDv2 report behind a hop-by-hop header carrying a router alert.
    static let mldReport = "33330000001692ed1a1bec8386dd6000000000380001fe8000000000000090ed1afffe1bec83ff0200000000000000000000000000163a000502000001008f00ebc00000000204000000ff0200000000000000000001ff00000304000000ff0200000000000000000001ff1bec83"
    /// A router solicitation from fe80::90ed:1aff:fe1b:ec83 with its source link-layer address.
    static let routerSolicitation = "33330000000292ed1a1bec8386dd6000000000103afffe8000000000000090ed1afffe1bec83ff02000000000000000000000000000285004c1500000000010192ed1a1bec83"
    /// Address resolution: fd00:65::3 asks for fd00:65::1.
    static let neighborSolicitation = "3333ff00000192ed1a1bec8386dd6000000000203afffd000065000000000000000000000003ff0200000000000000000001ff0000018700e54100000000fd000065000000000000000000000001010192ed1a1bec83"
    /// The answer: fd00:65::1 is at 36:42:5c:53:6b:55 (solicited, override).
    static let neighborAdvertisement = "92ed1a1bec8336425c536b5586dd6000000000203afffd000065000000000000000000000001fd00006500000000000000000000000388001f8260000000fd000065000000000000000000000001020136425c536b55"
    /// `ping -6 -s 56`: an echo request, id 0x5411, sequence 1, flow label 0x71d2e.
    static let echoRequest = "36425c536b5592ed1a1bec8386dd60071d2e00403a40fd000065000000000000000000000003fd00006500000000000000000000000180004421541100012940166b00000000e903050000000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637"
    /// The first 48 bytes of the IPv6 packet of `ping -6 -s 3000`'s first fragment (header and
    /// fragment header: offset 0, more fragments, id 0x24bbb559); its payload length says 1,456.
    static let firstFragmentHeaders = "60071d2e05b02c40fd000065000000000000000000000003fd0000650000000000000000000000013a00000124bbb559"
    /// A UDP datagram ("hello") to port 9.
    static let udp = "e201d2f220fb867aa0e3863d86dd60050904000d1140fd000065000000000000000000000003fd00006500000000000000000000000190ca0009000d305f68656c6c6f"
    /// The answer to it: destination unreachable, port unreachable, quoting the datagram.
    static let portUnreachable = "867aa0e3863de201d2f220fb86dd600cef6d003d3a40fd000065000000000000000000000001fd0000650000000000000000000000030104897c0000000060050904000d1140fd000065000000000000000000000003fd00006500000000000000000000000190ca0009000d305f68656c6c6f"
    /// A TCP SYN to port 7 with MSS 1440, SACK-permitted, timestamps and window scale 10.
    static let tcpSYN = "e201d2f220fb867aa0e3863d86dd600ac93200280640fd000065000000000000000000000003fd000065000000000000000000000001b5ce00076cf265dd00000000a002fd207cf40000020405a00402080a6f43db43000000000103030a"

    /// Every whole frame above.
    static let all = [dadSolicitation, mldReport, routerSolicitation, neighborSolicitation, neighborAdvertisement, echoRequest, udp, portUnreachable, tcpSYN]

    /// The bytes of a hex string.
    static func bytes(_ hex: String) -> [UInt8] {
        var result: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            result.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return result
    }

    /// The IPv6 packet of a frame (its Ethernet header removed), in a buffer.
    static func packet(_ hex: String) -> ByteBuffer {
        ByteBuffer(bytes: bytes(hex).dropFirst(14))
    }
}
