public import NIOCore
public import VPNKitBase
import VPNKitEthernet
public import VPNKitStack
import VPNKitTransport

/// Replays a capture of real traffic against a stack, for tests: the stack stands in for one host
/// of the capture (the one with MAC `standingInFor`), every frame the *other* hosts sent is fed to
/// it with the capture's own timing as its clock, and what it answers is collected next to what the
/// real host answered at that point. Compare the two to check the stack against, say, the Linux
/// kernel. The replay is driven by frames only: the stack's timers are not run between them, so
/// its answers are those the frames themselves call for.
public struct CaptureReplay {
    /// What a replay produced.
    public struct Result: Sendable {
        /// Frames of the other hosts given to the stack.
        public var framesReplayed: Int
        /// Every frame the stack sent, in order.
        public var answers: [ByteBuffer]
        /// Every frame the real host sent in the capture, in order (the expectation), except those
        /// answering frames that `include` left out.
        public var recordedAnswers: [ByteBuffer]
    }

    /// Replays the capture at `path` against `stack`.
    ///
    /// - Parameters:
    ///   - path: a pcap file with Ethernet frames.
    ///   - stack: the stack to drive; configure it with the replaced host's MAC and address (and
    ///     usually `gratuitousARPOnStart = false`, since the real host sent none).
    ///   - mac: the MAC address of the host the stack replaces.
    ///   - include: which frames of the other hosts to replay; a frame left out is skipped together
    ///     with the real host's answers to it.
    /// - Throws: `PcapError` when the file cannot be read.
    public static func run(
        capture path: String, against stack: NetworkStack, standingInFor mac: MACAddress, include: (ByteBuffer) -> Bool = { _ in true }
    ) throws(PcapError) -> Result {
        let replay = try PcapReplayTransport(path: path)
        var recorded: [ByteBuffer] = []
        var replayed = 0
        var skipping = false
        try withoutActuallyEscaping(include) { include throws(PcapError) in
        replay.onFrame = { frame in
            guard let ethernet = try? EthernetFrame(frame) else { return }
            if ethernet.source == mac {
                if !skipping { recorded.append(frame) }
                return
            }
            skipping = !include(frame)
            if skipping { return }
            replayed += 1
            stack.receive(frame, now: replay.now)
            stack.drainOutput { replay.send($0.joined) }
        }
        while replay.step() != nil {}
        replay.onFrame = nil
        }
        return Result(framesReplayed: replayed, answers: replay.transmitted.map(\.frame), recordedAnswers: recorded)
    }
}
