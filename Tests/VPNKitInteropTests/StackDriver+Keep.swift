import VPNKitRuntime

/// Holds an object (a socket, a service) for as long as the driver runs: released when it stops.
final class KeptAlive: StackDriverAttachment {
    private var object: AnyObject?
    init(_ object: AnyObject) { self.object = object }
    func driverDidStop() { object = nil }
}

extension StackDriver {
    /// Keeps `object` alive until the driver stops.
    func keep(_ object: AnyObject) { attachments.append(KeptAlive(object)) }
}
