import Testing
@testable import VPNKitTransport
@Test func transportModuleLinks() { #expect(TransportStatistics().framesSent == 0) }
