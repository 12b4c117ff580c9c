// swift-tools-version: 6.1
import PackageDescription

// Layered modules; imports point downward only (each line depends on lines above it):
//   VPNKitBase                      addresses (IPv4, IPv6, IPAddress), IP protocol numbers, byte views,
//                                   checksums and the transport pseudo-header, counters' naming
//   VPNKitEthernet                  Ethernet frames
//   VPNKitARP · VPNKitIPv4          ARP (packets, cache) · IPv4 (packets, ICMP, reassembly)
//   VPNKitIPv6                      IPv6 (packets, extension headers, ICMPv6, neighbour discovery)
//   VPNKitUDP · VPNKitTCP           UDP datagrams · TCP segments and the connection's components (over
//                                   Base only: the pseudo-header is family-neutral)
//   VPNKitDHCP · VPNKitDNS          DHCP and DNS messages and state machines (no I/O, no stack)
//   VPNKitStack                     the stack's pure core: NetworkStack, a state machine over frames
//   CPcap → VPNKitPcap              pcap files
//   VPNKitSystem → VPNKitReactor    the data path's system calls · its epoll loop (an EventLoop) and host sockets
//   CVPNKitLinux → VPNKitTransport  frame transports (TAP, unix sockets, vmnet, in-memory, capture, faults)
//   VPNKitRuntime                   StackDriver (a stack on a SwiftNIO loop), async sockets, diagnostics
//   VPNKitServices                  DHCP and DNS services attached to a running stack
//   VPNKitNAT                       guest flows carried over host sockets
//   VPNKit                          the assembly (UserspaceStack, Link) and the umbrella import
//   VPNKitDecode                    `vpnkit decode`: wire modules (DNS's messages among them: VPNKitDNS
//                                   does no I/O) and pcap only
//   vpnkit                          the command: thin, over VPNKit and VPNKitDecode (and NIOHTTP1 for
//                                   the control API)
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "SwiftVPNKit",
    products: [
        .executable(name: "vpnkit", targets: ["vpnkit"]),
        // The umbrella: `import VPNKit` for the embedding API and everything it uses.
        .library(name: "VPNKit", targets: ["VPNKit"]),
        .library(name: "VPNKitBase", targets: ["VPNKitBase"]),
        .library(name: "VPNKitEthernet", targets: ["VPNKitEthernet"]),
        .library(name: "VPNKitARP", targets: ["VPNKitARP"]),
        .library(name: "VPNKitIPv4", targets: ["VPNKitIPv4"]),
        .library(name: "VPNKitIPv6", targets: ["VPNKitIPv6"]),
        .library(name: "VPNKitUDP", targets: ["VPNKitUDP"]),
        .library(name: "VPNKitTCP", targets: ["VPNKitTCP"]),
        .library(name: "VPNKitDHCP", targets: ["VPNKitDHCP"]),
        .library(name: "VPNKitPcap", targets: ["VPNKitPcap"]),
        .library(name: "VPNKitDecode", targets: ["VPNKitDecode"]),
        .library(name: "VPNKitTransport", targets: ["VPNKitTransport"]),
        .library(name: "VPNKitSystem", targets: ["VPNKitSystem"]),
        .library(name: "VPNKitReactor", targets: ["VPNKitReactor"]),
        .library(name: "VPNKitStack", targets: ["VPNKitStack"]),
        .library(name: "VPNKitRuntime", targets: ["VPNKitRuntime"]),
        .library(name: "VPNKitServices", targets: ["VPNKitServices"]),
        .library(name: "VPNKitNAT", targets: ["VPNKitNAT"]),
        .library(name: "VPNKitDNS", targets: ["VPNKitDNS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "VPNKitBase",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(name: "VPNKitEthernet", dependencies: ["VPNKitBase"], swiftSettings: strict),
        .target(name: "VPNKitARP", dependencies: ["VPNKitBase", "VPNKitEthernet"], swiftSettings: strict),
        .target(name: "VPNKitIPv4", dependencies: ["VPNKitBase", "VPNKitEthernet"], swiftSettings: strict),
        .target(name: "VPNKitIPv6", dependencies: ["VPNKitBase", .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        .target(name: "VPNKitUDP", dependencies: ["VPNKitBase"], swiftSettings: strict),
        .target(
            name: "VPNKitTCP", dependencies: ["VPNKitBase", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict),
        .target(
            name: "VPNKitDHCP",
            dependencies: [
                "VPNKitBase", "VPNKitIPv4", .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .systemLibrary(
            name: "CPcap",
            pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]
        ),
        .target(name: "VPNKitPcap", dependencies: ["CPcap", "VPNKitBase"], swiftSettings: strict),
        // setns(2) and the TUNSETIFF ioctl, which Swift's Glibc module does not expose. Linux only: its
        // sources are empty elsewhere and every dependency on it is `.when(platforms: [.linux])`.
        .target(name: "CVPNKitLinux"),
        // libseccomp, for the daemon's --enable-seccomp filter. Linux only: every dependency on it is
        // `.when(platforms: [.linux])`.
        .systemLibrary(
            name: "CSeccomp",
            pkgConfig: "libseccomp",
            providers: [.apt(["libseccomp-dev"])]
        ),
        // The system calls of the daemon's data path, in one place (epoll, eventfd, sockets, reads and
        // writes), with typed errors. Linux only: empty elsewhere.
        .target(
            name: "VPNKitSystem",
            dependencies: [
                "VPNKitBase", .target(name: "CVPNKitLinux", condition: .when(platforms: [.linux])),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The daemon's data-path loop: one epoll thread that is also a SwiftNIO EventLoop, with host
        // sockets of its own (streams, datagrams, listeners). Linux only: empty elsewhere.
        .target(
            name: "VPNKitReactor",
            dependencies: ["VPNKitBase", "VPNKitSystem", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "VPNKitTransport",
            dependencies: [
                "VPNKitBase", "VPNKitPcap", "VPNKitReactor", "VPNKitSystem",
                .target(name: "CVPNKitLinux", condition: .when(platforms: [.linux])),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The stack's pure core: NetworkStack, a state machine over frames with an injected clock.
        .target(
            name: "VPNKitStack",
            dependencies: [
                "VPNKitBase", "VPNKitEthernet", "VPNKitARP", "VPNKitIPv4", "VPNKitIPv6", "VPNKitUDP", "VPNKitTCP",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The stack's runtime: StackDriver (a stack on a SwiftNIO loop over a FrameTransport), the
        // async socket API, the diagnostic services.
        .target(
            name: "VPNKitRuntime",
            dependencies: [
                "VPNKitBase", "VPNKitReactor", "VPNKitIPv4", "VPNKitTCP", "VPNKitStack", "VPNKitTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Services on the gateway, attached to a running stack: DHCP server and client, DNS.
        .target(
            name: "VPNKitServices",
            dependencies: [
                "VPNKitBase", "VPNKitReactor", "VPNKitSystem", "VPNKitARP", "VPNKitIPv4", "VPNKitStack", "VPNKitRuntime", "VPNKitDHCP", "VPNKitDNS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "VPNKitDNS",
            dependencies: ["VPNKitBase", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "VPNKitNAT",
            dependencies: [
                "VPNKitBase", "VPNKitReactor", "VPNKitSystem", "VPNKitIPv4", "VPNKitIPv6", "VPNKitTCP", "VPNKitStack", "VPNKitRuntime", "VPNKitTransport",
                .target(name: "CVPNKitLinux", condition: .when(platforms: [.linux])),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "VPNKitDecode",
            dependencies: [
                "VPNKitBase", "VPNKitEthernet", "VPNKitARP", "VPNKitIPv4", "VPNKitIPv6", "VPNKitUDP", "VPNKitTCP",
                "VPNKitDHCP", "VPNKitDNS", "VPNKitPcap",
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "vpnkit",
            dependencies: [
                "VPNKit", "VPNKitDecode", "VPNKitPcap", "VPNKitReactor",
                .target(name: "CVPNKitLinux", condition: .when(platforms: [.linux])),
                .target(name: "CSeccomp", condition: .when(platforms: [.linux])),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "VPNKit",
            dependencies: [
                "VPNKitBase", "VPNKitEthernet", "VPNKitARP", "VPNKitIPv4", "VPNKitIPv6", "VPNKitUDP", "VPNKitTCP", "VPNKitStack", "VPNKitRuntime", "VPNKitServices",
                "VPNKitTransport", "VPNKitDHCP", "VPNKitDNS", "VPNKitNAT", "VPNKitPcap",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // Examples: small programs written against `import VPNKit` only, as a user would.
        .executableTarget(name: "tcp-echo-server", dependencies: ["VPNKit"], path: "Examples/TCPEchoServer", swiftSettings: strict),
        .executableTarget(name: "replay-capture", dependencies: ["VPNKit"], path: "Examples/ReplayCapture", swiftSettings: strict),
        .executableTarget(name: "dhcp-lease", dependencies: ["VPNKit"], path: "Examples/DHCPLease", swiftSettings: strict),
        .executableTarget(
            name: "custom-transport",
            dependencies: ["VPNKit", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
            path: "Examples/CustomTransport", swiftSettings: strict),
        // The public surface, used exactly as a user would (no @testable): it cannot break silently.
        .testTarget(
            name: "VPNKitPublicAPITests",
            dependencies: ["VPNKit", .product(name: "MetricsTestKit", package: "swift-metrics")],
            swiftSettings: strict
        ),
        // Fuzzing: one entry point per parser and one for the whole stack (scripts/fuzz.sh builds
        // them with libFuzzer; built normally, vpnkit-fuzz replays inputs such as crash regressions).
        .target(
            name: "VPNKitFuzzTargets",
            dependencies: [
                "VPNKitBase", "VPNKitEthernet", "VPNKitARP", "VPNKitIPv4", "VPNKitIPv6", "VPNKitUDP", "VPNKitTCP", "VPNKitStack", "VPNKitRuntime",
                "VPNKitServices", "VPNKitTransport", "VPNKitDHCP", "VPNKitDNS", "VPNKitDecode",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Fuzz/VPNKitFuzzTargets", swiftSettings: strict),
        .executableTarget(name: "vpnkit-fuzz", dependencies: ["VPNKitFuzzTargets"], path: "Fuzz/vpnkit-fuzz", swiftSettings: strict),
        .testTarget(name: "VPNKitFuzzTests", dependencies: ["VPNKitFuzzTargets", "VPNKitPcap", "VPNKitEthernet", "VPNKitIPv4", "VPNKitBase", "VPNKitTestSupport"], swiftSettings: strict),
        // Helpers shared by the test targets.
        .target(
            name: "VPNKitTestSupport", dependencies: ["VPNKitTransport", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/VPNKitTestSupport", swiftSettings: strict),
        .testTarget(
            name: "VPNKitWireTests",
            dependencies: [
                "VPNKitBase", "VPNKitEthernet", "VPNKitARP", "VPNKitIPv4", "VPNKitUDP", "VPNKitTCP",
                "VPNKitDHCP",
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "VPNKitReactorTests",
            dependencies: ["VPNKitReactor", "VPNKitSystem", "VPNKitBase", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "VPNKitTransportTests",
            dependencies: [
                "VPNKitTestSupport", "VPNKitTransport", "VPNKitBase", "VPNKitPcap",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "VPNKitStackTests",
            dependencies: [
                "VPNKitStack", "VPNKitRuntime", "VPNKitServices", "VPNKitTransport", "VPNKitBase", "VPNKitEthernet", "VPNKitARP", "VPNKitIPv4", "VPNKitUDP",
                "VPNKitPcap",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "VPNKitDHCPTests",
            dependencies: [
                "VPNKitTestSupport",
                "VPNKitDHCP", "VPNKitStack", "VPNKitRuntime", "VPNKitServices", "VPNKitTransport", "VPNKitBase", "VPNKitEthernet", "VPNKitIPv4", "VPNKitUDP",
                "VPNKitARP", "VPNKitPcap", "VPNKitIPv6",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "VPNKitInteropTests",
            dependencies: [
                "VPNKitTestSupport",
                "VPNKitStack", "VPNKitRuntime", "VPNKitServices", "VPNKitTransport", "VPNKitBase", "VPNKitIPv4", "VPNKitPcap", "VPNKitDecode", "VPNKitDHCP", "vpnkit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "VPNKitNATTests",
            dependencies: [
                "VPNKitNAT", "VPNKitStack", "VPNKitRuntime", "VPNKitServices", "VPNKitTransport", "VPNKitBase", "VPNKitTCP", "VPNKitIPv4", "VPNKitDNS",
                "VPNKitEthernet", "VPNKitUDP", "VPNKitTestSupport", "VPNKitReactor",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "VPNKitDNSTests",
            dependencies: ["VPNKitDNS", "VPNKitBase", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "VPNKitDecodeTests",
            dependencies: [
                "VPNKitTestSupport",
                "VPNKitDecode", "VPNKitPcap", "VPNKitBase", "VPNKitEthernet", "VPNKitARP", "VPNKitIPv4", "VPNKitIPv6", "VPNKitUDP",
                "VPNKitTCP", "VPNKitDHCP", "vpnkit",
            ],
            swiftSettings: strict
        ),
        // The address types (IPv4, IPv6, IPAddress) and the transport pseudo-header.
        .testTarget(
            name: "VPNKitBaseTests",
            dependencies: ["VPNKitBase", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        // The TCP connection's components, each on its own (RTT estimator, congestion control, SACK
        // scoreboard, reassembly, send queue, sequence numbers).
        .testTarget(
            name: "VPNKitTCPTests",
            dependencies: ["VPNKitTCP", "VPNKitBase", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        // IPv6 wire formats against frames the Linux kernel sent, and hostile chains.
        .testTarget(
            name: "VPNKitIPv6Tests",
            dependencies: ["VPNKitIPv6", "VPNKitBase", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
    ]
)
