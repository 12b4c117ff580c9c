// `import VPNKit` gives a user everything needed to embed the stack: the running stack and its
// services, transports, configuration values, addresses, counters and the wire formats. Each layer
// stays importable on its own (`import VPNKitIPv4` for just the IPv4 header view, say).
@_exported import VPNKitBase
@_exported import VPNKitEthernet
@_exported import VPNKitARP
@_exported import VPNKitIPv4
@_exported import VPNKitIPv6
@_exported import VPNKitUDP
@_exported import VPNKitTCP
@_exported import VPNKitStack
@_exported import VPNKitRuntime
@_exported import VPNKitServices
@_exported import VPNKitTransport
@_exported import VPNKitDHCP
@_exported import VPNKitDNS
@_exported import VPNKitNAT
@_exported import VPNKitPcap
// The few SwiftNIO types that appear in the API: buffers, loops and time.
@_exported import struct NIOCore.ByteBuffer
@_exported import struct NIOCore.ByteBufferAllocator
@_exported import protocol NIOCore.EventLoop
@_exported import protocol NIOCore.EventLoopGroup
@_exported import struct NIOCore.NIODeadline
@_exported import struct NIOCore.TimeAmount
