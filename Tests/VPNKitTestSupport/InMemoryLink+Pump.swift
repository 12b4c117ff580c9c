public import NIOCore
public import VPNKitTransport

extension InMemoryLink {
    /// Delivers the link's frames from a repeating task on `loop`, calling `flush` after each pass:
    /// every 200 µs while frames move, every 5 ms once none has moved for 10 ms. A test's link that is
    /// never shut down, or many running at once in a full test run, then costs little CPU instead of
    /// 5,000 wake-ups a second each (which starved the timing of other tests). Runs until the loop
    /// shuts down. Call on `loop`.
    public func pump(on loop: any EventLoop, flush: @escaping () -> Void) {
        var quiet = 0
        var moved: UInt64 = 0
        func tick() {
            let delay: TimeAmount = quiet < 50 ? .microseconds(200) : .milliseconds(5)
            loop.assumeIsolated().scheduleTask(in: delay) {
                self.deliver(until: .now())
                flush()
                let now = self.a.statistics.framesSent &+ self.b.statistics.framesSent
                if now != moved {
                    moved = now
                    quiet = 0
                } else {
                    quiet += 1
                }
                tick()
            }
        }
        tick()
    }
}
