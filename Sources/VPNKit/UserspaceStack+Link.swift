public import NIOCore
import NIOPosix
public import VPNKitTransport

extension UserspaceStack {
    /// How a stack reaches its peer: a recipe that opens a `FrameTransport` on the stack's event
    /// loop. Built-in recipes cover a TAP device and an in-process pair; ``custom(_:)`` takes any
    /// transport you write (see the "Writing a transport" article).
    public struct Link: Sendable {
        /// The loop the transport must live on, when it is fixed (both ends of a connected pair share
        /// one); nil lets the stack choose.
        public let eventLoop: (any EventLoop)?
        let open: @Sendable (any EventLoop) -> EventLoopFuture<NIOLoopBound<any FrameTransport>>

        init(eventLoop: (any EventLoop)?, open: @escaping @Sendable (any EventLoop) -> EventLoopFuture<NIOLoopBound<any FrameTransport>>) {
            self.eventLoop = eventLoop
            self.open = open
        }

        /// A transport made by `make`, which runs on the stack's event loop and may throw to refuse.
        public static func custom(_ make: @escaping @Sendable (any EventLoop) throws -> any FrameTransport) -> Link {
            Link(eventLoop: nil) { loop in
                loop.submit { NIOLoopBound(try make(loop), eventLoop: loop) }
            }
        }

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
        /// the stack's write (see `ReceiveSteering`, and when that pays); where it is not permitted
        /// the device works as before.
        public static func tap(device: String, namespace: String? = nil, mtu: Int = 1500, offloads: Bool = true, receiveSteering: Bool = false) -> Link {
            Link(eventLoop: nil) { loop in
                TAPTransport.open(namespace: namespace, device: device, mtu: mtu, offloads: offloads, receiveSteering: receiveSteering, on: loop).map { tap in
                    NIOLoopBound(tap.value as any FrameTransport, eventLoop: loop)
                }
            }
        }

        /// Two links joined to each other in memory (an `EventLoopLink`): start one stack on each
        /// and they share an Ethernet segment. Both stacks run on `eventLoop` (nil: a loop of SwiftNIO's
        /// shared singleton group).
        public static func connectedPair(mtu: Int = 1500, on eventLoop: (any EventLoop)? = nil) -> (Link, Link) {
            let eventLoop = eventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
            let box = NIOLoopBoundBox<EventLoopLink?>.makeEmptyBox(valueType: EventLoopLink.self, eventLoop: eventLoop)
            @Sendable func end(_ pick: @escaping @Sendable (EventLoopLink) -> EventLoopLink.Endpoint) -> Link {
                Link(eventLoop: eventLoop) { loop in
                    loop.submit {
                        let link: EventLoopLink
                        if let existing = box.value {
                            link = existing
                        } else {
                            link = EventLoopLink(mtu: mtu, on: eventLoop)
                            box.value = link
                        }
                        return NIOLoopBound(pick(link) as any FrameTransport, eventLoop: loop)
                    }
                }
            }
            return (end { $0.a }, end { $0.b })
        }
    }
}
