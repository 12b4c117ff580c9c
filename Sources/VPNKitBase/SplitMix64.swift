/// A small, fast, seedable pseudo-random generator (SplitMix64). Everything random in the project
/// (fault injection, DHCP jitter, tests) draws from it, so a seed reproduces a run exactly.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The generator's entire state; saving and restoring it replays the same sequence.
    public var state: UInt64

    /// Creates a generator whose output is fully determined by `seed`.
    public init(seed: UInt64) { self.state = seed }

    /// Advances the state and returns the next 64 uniformly distributed bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// True with probability `p` (0…1).
    public mutating func chance(_ p: Double) -> Bool {
        Double(next() >> 11) * 0x1.0p-53 < p
    }
}
