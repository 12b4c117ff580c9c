import Testing
import VPNKitBase

@Suite("Read batching: when a wakeup reads past its first item")
struct ReadBatchingTests {
    /// Runs `wakeups` wakeups in which anything read past the first item finds `foundMore`, and
    /// returns how many of them read past it.
    private func run(_ policy: inout ReadBatching, wakeups: Int, foundMore: Bool) -> Int {
        var batched = 0
        for _ in 0..<wakeups where policy.shouldReadPastFirst() {
            batched += 1
            policy.record(foundMore: foundMore)
        }
        return batched
    }

    @Test("bulk traffic always batches")
    func bulkBatches() {
        var policy = ReadBatching()
        #expect(run(&policy, wakeups: 1000, foundMore: true) == 1000)
        #expect(policy.isBatching)
    }

    @Test("request-and-answer traffic stops after four empty extra reads, then probes every eighth wakeup")
    func quietSkips() {
        var policy = ReadBatching()
        #expect(run(&policy, wakeups: 4, foundMore: false) == 4)
        #expect(!policy.isBatching)
        // 800 more wakeups: exactly one in eight reads past the first item.
        #expect(run(&policy, wakeups: 800, foundMore: false) == 100)
        #expect(!policy.isBatching)
    }

    @Test("three empty extra reads are not enough to stop batching, and one that finds more resets the count")
    func thresholdIsExact() {
        var policy = ReadBatching()
        _ = run(&policy, wakeups: 3, foundMore: false)
        #expect(policy.isBatching)
        _ = run(&policy, wakeups: 1, foundMore: true)
        _ = run(&policy, wakeups: 3, foundMore: false)
        #expect(policy.isBatching)
        _ = run(&policy, wakeups: 1, foundMore: false)
        #expect(!policy.isBatching)
    }

    @Test("a probe that finds items queued turns batching back on at once")
    func probeResumes() {
        var policy = ReadBatching()
        _ = run(&policy, wakeups: 4, foundMore: false)
        var skipped = 0
        while !policy.shouldReadPastFirst() { skipped += 1 }
        #expect(skipped == ReadBatching.probeInterval - 1)
        policy.record(foundMore: true)
        #expect(policy.isBatching)
        #expect(run(&policy, wakeups: 10, foundMore: true) == 10)
    }
}
