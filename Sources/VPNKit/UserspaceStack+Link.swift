import Logging
public import NIOCore
import NIOPosix
import VPNKitBase
import VPNKitRuntime
public import VPNKitTransport

extension UserspaceStack {
    /// How a stack reaches its peer: a recipe that opens a `FrameTransport` on the stack's event
    /// loop, with the capture and fault wrappers it should get. Every way the `vpnkit` command
    /// serves a guest is one of these: a TAP device, qemu's stream framing (listening or
    /// connecting), a unix datagram socket, a vmnet server, a descriptor handed over by the
    /// embedder; ``custom(_:)`` takes any transport you write (see the "Writing a transport" article).
    public struct Link: Sendable {
        /// The loop the transport must live on, when it is fixed (both ends of a connected pair share
        /// one); nil lets the stack choose.
        public let eventLoop: (any EventLoop)?
        /// What the link is, for log lines ("tap tap0 in namespace guest").
        public let description: String
        /// A pcap file every frame is written to from the start (see ``capturing(toFile:)``).
        public private(set) var captureFile: String?
        /// Faults injected between the link and the stack (see ``injectingFaults(_:)``).
        public private(set) var faults: FaultConfiguration?
        let open: @Sendable (LinkContext) -> EventLoopFuture<NIOLoopBound<any FrameTransport>>

        init(
            eventLoop: (any EventLoop)?, description: String,
            open: @escaping @Sendable (LinkContext) -> EventLoopFuture<NIOLoopBound<any FrameTransport>>
        ) {
            self.eventLoop = eventLoop
            self.description = description
            self.open = open
        }

        /// This link with every frame, both directions, written to a pcap file at `path` from the
        /// start (created or truncated). The capture sits next to the guest, under any faults, and
        /// keeps the link's offloads: frames are recorded as they crossed the device.
        public func capturing(toFile path: String) -> Link {
            var link = self
            link.captureFile = path
            return link
        }

        /// This link with `faults` injected in both directions (the guest-bound direction with
        /// `faults.seed`, the other with a seed derived from it), between the capture and the stack.
        /// A faulty link carries no offloads.
        public func injectingFaults(_ faults: FaultConfiguration) -> Link {
            var link = self
            link.faults = faults.isNone ? nil : faults
            return link
        }

        /// A transport made by `make`, which runs on the stack's event loop and may throw to refuse.
        public static func custom(_ make: @escaping @Sendable (any EventLoop) throws -> any FrameTransport) -> Link {
            Link(eventLoop: nil, description: "custom transport") { context in
                context.loop.submit { NIOLoopBound(try make(context.loop), eventLoop: context.loop) }
            }
        }

        #if os(Linux)
        /// The TAP device `device` — opened, or created when missing — in the network namespace
        /// `namespace` (a name under /var/run/netns, or a path; nil: our own namespace). Needs
        /// CAP_NET_ADMIN. Set the device's MTU to `mtu` on the guest side; bring it up there.
        ///
        /// With `offloads` (the default) the device carries a virtio-net header: the guest's kernel
        /// hands over TCP segments of up to 64 KiB with checksums left partial, and takes them from
        /// the stack, whatever the MTU (see `TAPTransport.open`).
        ///
        /// With `receiveSteering` the device's receive queues get an RPS mask of every CPU we may run
        /// on, so the guest's kernel processes what the stack sends on another CPU instead of inside
        /// the stack's write (see `ReceiveSteering`); where it is not permitted the device works as
        /// before and a notice is logged.
        ///
        /// With `userNamespace` (such as /proc/PID/ns/user) the user namespace owning `namespace` is
        /// entered first, by a short-lived child: an unprivileged daemon so serves a rootless
        /// container's namespace (slirp4netns's --userns-path).
        public static func tap(
            device: String, namespace: String? = nil, userNamespace: String? = nil, mtu: Int = 1500, offloads: Bool = true,
            receiveSteering: Bool = false
        ) -> Link {
            Link(eventLoop: nil, description: "tap \(device)" + (namespace.map { " in namespace \($0)" } ?? "")) { context in
                TAPTransport.open(
                    namespace: namespace, userNamespace: userNamespace, device: device, mtu: mtu, offloads: offloads,
                    receiveSteering: receiveSteering, on: context.loop)
                    .map { tap in
                        context.tap = tap.value
                        context.logSteering(tap.value)
                        return NIOLoopBound(tap.value as any FrameTransport, eventLoop: context.loop)
                    }
            }
        }
        #endif

        /// A unix datagram socket bound at `path`, one frame per datagram (qemu's `-netdev dgram`,
        /// vfkit's unixgram device); the peer is the first sender (see `DatagramFrameTransport`).
        public static func datagramSocket(path: String, mtu: Int = 1500, options: SocketTransportOptions = .init()) -> Link {
            Link(eventLoop: nil, description: "dgram socket \(path)") { context in
                DatagramFrameTransport.bind(path: path, mtu: mtu, options: options, on: context.loop).map {
                    NIOLoopBound($0.value as any FrameTransport, eventLoop: context.loop)
                }
            }
        }

        /// How frames are delimited on a descriptor handed over by the embedder.
        public enum DescriptorFraming: Sendable, Hashable {
            /// A unix datagram socket, one frame per datagram (Virtualization.framework's file-handle
            /// attachment, vfkit, krunkit: one end of `socketpair(AF_UNIX, SOCK_DGRAM)`).
            case datagram
            /// A stream socket with qemu's framing: each frame behind its length as 4 bytes,
            /// big-endian (`qemu -netdev socket,fd=`, `-netdev stream`).
            case qemuStream
        }

        /// A connected socket the embedder hands over, `descriptor`, framed as `framing`. The link
        /// owns the descriptor from the moment the stack starts: it is closed when the stack shuts
        /// down (or when opening fails). Keep the other end for the guest.
        public static func fileDescriptor(
            _ descriptor: Int32, framing: DescriptorFraming, mtu: Int = 1500, options: SocketTransportOptions = .init()
        ) -> Link {
            Link(eventLoop: nil, description: "descriptor \(descriptor) (\(framing))") { context in
                switch framing {
                case .datagram:
                    return DatagramFrameTransport.adopt(descriptor: descriptor, mtu: mtu, options: options, on: context.loop).map {
                        NIOLoopBound($0.value as any FrameTransport, eventLoop: context.loop)
                    }
                case .qemuStream:
                    return QemuStreamTransport.adopt(descriptor: descriptor, mtu: mtu, options: options, on: context.loop).map {
                        NIOLoopBound($0.value as any FrameTransport, eventLoop: context.loop)
                    }
                }
            }
        }

        /// qemu's stream framing on the unix socket `path`. With `connect`, qemu listens
        /// (`-netdev stream,server=on`) and we connect, reconnecting once a second after it goes away
        /// (the first connection must succeed). Otherwise we listen and any number of guests connect
        /// (`server=off`), each a port of a learning switch in front of the stack.
        public static func qemuStream(path: String, connect: Bool = false, mtu: Int = 1500, options: SocketTransportOptions = .init()) -> Link {
            Link(eventLoop: nil, description: "qemu socket \(path)") { context in
                connect
                    ? GuestSwitch.connectingToQemu(path: path, mtu: mtu, options: options, context: context)
                    : GuestSwitch.listening(.qemu, path: path, mtu: mtu, options: options, context: context)
            }
        }

        /// Docker's vpnkit protocol (vmnet) served on the unix socket `path`: any number of clients,
        /// each a port of a learning switch in front of the stack. A client's UUID keeps its MAC and
        /// IPv4 address (from the DHCP pool) across reconnections, as vpnkit does.
        public static func vmnetServer(path: String, mtu: Int = 1500, options: SocketTransportOptions = .init()) -> Link {
            Link(eventLoop: nil, description: "vmnet socket \(path)") { context in
                GuestSwitch.listening(.vmnet, path: path, mtu: mtu, options: options, context: context)
            }
        }

        /// Two links joined to each other in memory (an `EventLoopLink`): start one stack on each
        /// and they share an Ethernet segment. Both stacks run on `eventLoop` (nil: a loop of SwiftNIO's
        /// shared singleton group).
        public static func connectedPair(mtu: Int = 1500, on eventLoop: (any EventLoop)? = nil) -> (Link, Link) {
            let eventLoop = eventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
            let box = NIOLoopBoundBox<EventLoopLink?>.makeEmptyBox(valueType: EventLoopLink.self, eventLoop: eventLoop)
            @Sendable func end(_ name: String, _ pick: @escaping @Sendable (EventLoopLink) -> EventLoopLink.Endpoint) -> Link {
                Link(eventLoop: eventLoop, description: "in-memory pair, end \(name)") { context in
                    context.loop.submit {
                        let link: EventLoopLink
                        if let existing = box.value {
                            link = existing
                        } else {
                            link = EventLoopLink(mtu: mtu, on: eventLoop)
                            box.value = link
                        }
                        return NIOLoopBound(pick(link) as any FrameTransport, eventLoop: context.loop)
                    }
                }
            }
            return (end("a") { $0.a }, end("b") { $0.b })
        }
    }
}

/// What a link's recipe gets while it opens, and keeps: the loop, the stack's MAC address, where to
/// log, and the hooks the assembly fills in once the stack runs (guests leaving a switch; the vmnet
/// registry the DHCP server must know). Confined to the loop once the stack starts.
final class LinkContext: @unchecked Sendable {  // made before the loop runs the stack, then used only on it
    let loop: any EventLoop
    let stackMAC: MACAddress
    let logger: Logger
    /// Set by the assembly: a guest's connection to the switch ended; these MACs were behind it.
    var guestsLeft: ((Set<MACAddress>) -> Void)?
    /// Set by the vmnet link: its clients' identities (the DHCP server is told of them).
    var vmnetRegistry: VmnetRegistry?
    /// Set by switch links: the switch in front of the stack.
    var guestSwitch: SwitchTransport?
    #if os(Linux)
    /// Set by the TAP link: the device, whose counters go beyond a transport's statistics.
    var tap: TAPTransport?
    #endif

    init(loop: any EventLoop, stackMAC: MACAddress, logger: Logger) {
        self.loop = loop
        self.stackMAC = stackMAC
        self.logger = logger
    }

    #if os(Linux)
    /// Receive steering is a speed-up, not a requirement: a failure is worth a notice, not an error.
    func logSteering(_ tap: TAPTransport) {
        switch tap.receiveSteering {
        case .failed: logger.notice("receive steering on \(tap.deviceName) \(tap.receiveSteering); the guest's receive work stays in our thread")
        case .notRequested: break
        default: logger.info("receive steering on \(tap.deviceName): \(tap.receiveSteering)")
        }
    }
    #endif
}
