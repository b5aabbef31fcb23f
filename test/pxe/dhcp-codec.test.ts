/**
 * The DHCP codec: a PXE client's DISCOVER written out byte by byte from RFC 2131/2132/4578/3004,
 * option overload and RFC 3396 long options, fast-check round trips, and fuzzing (random and mutated
 * packets: a result or DhcpDecodeError, never another exception).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  clientArchitectures,
  clientNdi,
  clientUuid,
  DhcpDecodeError,
  type DhcpPacket,
  decodeDhcp,
  decodeSubOptions,
  encodeDhcp,
  encodeSubOptions,
  isIpxe,
  isPxeClient,
  MESSAGE,
  macOf,
  messageType,
  OPT,
  option,
  userClasses,
  vendorClass,
} from '../../pxe/dhcp/codec.ts';

const VENDOR = 'PXEClient:Arch:00007:UNDI:003016';
const UUID = [0x4c, 0x4c, 0x45, 0x44, 0x00, 0x4a, 0x10, 0x80, 0x80, 0x43, 0xb2, 0xc0, 0x4f, 0x53, 0x35, 0x32];

/** A UEFI iPXE client's DISCOVER, assembled field by field as the RFCs lay it out. */
function discoverBytes(): Buffer {
  const fixed = Buffer.alloc(236);
  fixed[0] = 1; // BOOTREQUEST
  fixed[1] = 1; // Ethernet
  fixed[2] = 6;
  fixed.writeUInt32BE(0xdeadbeef, 4);
  fixed.writeUInt16BE(4, 8); // secs
  fixed.writeUInt16BE(0x8000, 10); // broadcast
  Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]).copy(fixed, 28);
  const opts = [
    [53, 1, 1],
    [57, 2, 0x05, 0xc0],
    [93, 2, 0x00, 0x07],
    [94, 3, 1, 3, 16],
    [97, 17, 0, ...UUID],
    [60, VENDOR.length, ...Buffer.from(VENDOR)],
    [77, 4, ...Buffer.from('iPXE')],
    [175, 6, 19, 1, 1, 17, 1, 1], // iPXE: bus-id?, http=1, https=1 (sub-options 19, 17)
    [55, 5, 1, 3, 6, 43, 67],
    [250, 3, 9, 8, 7], // a site-specific option nobody here knows
    [255],
  ].flat();
  return Buffer.concat([fixed, Buffer.from([99, 130, 83, 99]), Buffer.from(opts)]);
}

describe('DHCP codec', () => {
  it('reads a UEFI iPXE DISCOVER: type, MAC, architecture, NDI, UUID, vendor and user class, iPXE options', () => {
    const p = decodeDhcp(discoverBytes());
    expect(p).toMatchObject({ op: 1, htype: 1, hlen: 6, xid: 0xdeadbeef, secs: 4, flags: 0x8000 });
    expect(messageType(p)).toBe(MESSAGE.DISCOVER);
    expect(macOf(p)).toBe('52:54:00:12:34:56');
    expect(clientArchitectures(p)).toEqual([7]);
    expect(clientNdi(p)).toEqual({ type: 1, major: 3, minor: 16 });
    expect(clientUuid(p)).toBe('4c4c4544-004a-1080-8043-b2c04f533532');
    expect(vendorClass(p)).toBe(VENDOR);
    expect(isPxeClient(p)).toBe(true);
    expect(userClasses(p)).toEqual(['iPXE']);
    expect(isIpxe(p)).toBe(true);
    expect([...decodeSubOptions(option(p, OPT.IPXE)!).keys()]).toEqual([19, 17]);
    // The unknown option is kept, in its place, with its bytes.
    expect(p.options.map((o) => o.code)).toEqual([53, 57, 93, 94, 97, 60, 77, 175, 55, 250]);
    expect([...option(p, 250)!]).toEqual([9, 8, 7]);
  });

  it('writes it back so that it reads the same, unknown option included', () => {
    const p = decodeDhcp(discoverBytes());
    const again = encodeDhcp(p);
    expect(again.length).toBeGreaterThanOrEqual(300); // BOOTP minimum, some relays insist
    expect(decodeDhcp(again)).toEqual(p);
    // Byte for byte the same up to the end of the options.
    const orig = discoverBytes();
    expect(again.subarray(0, orig.length)).toEqual(orig);
  });

  it('reads RFC 3004 user classes and the bare form', () => {
    const base = decodeDhcp(discoverBytes());
    const withUc = (bytes: number[]): DhcpPacket => ({
      ...base,
      options: [
        ...base.options.filter((o) => o.code !== OPT.USER_CLASS),
        { code: 77, data: Uint8Array.from(bytes) },
      ],
    });
    expect(userClasses(withUc([4, ...Buffer.from('iPXE'), 3, ...Buffer.from('lab')]))).toEqual([
      'iPXE',
      'lab',
    ]);
    expect(userClasses(withUc([...Buffer.from('gPXE')]))).toEqual(['gPXE']);
    const noIpxe = {
      ...withUc([...Buffer.from('other')]),
      options: withUc([...Buffer.from('other')]).options.filter((o) => o.code !== OPT.IPXE),
    };
    expect(isIpxe(noIpxe)).toBe(false);
  });

  it('reads options carried in the file and sname fields (option 52, overload)', () => {
    const b = discoverBytes();
    const cut = b.indexOf(Buffer.from([60, VENDOR.length]), 240);
    // Move the vendor class into `file` and a hostname into `sname`; overload = 3 (both).
    const head = Buffer.concat([b.subarray(0, cut), Buffer.from([52, 1, 3, 255])]);
    const file = Buffer.from([60, VENDOR.length, ...Buffer.from(VENDOR), 255]);
    file.copy(head, 108);
    Buffer.from([12, 4, ...Buffer.from('node'), 255]).copy(head, 44);
    const p = decodeDhcp(head);
    expect(vendorClass(p)).toBe(VENDOR);
    expect(Buffer.from(option(p, OPT.HOSTNAME)!).toString()).toBe('node');
    expect(p.file).toBe('');
    expect(p.sname).toBe('');
  });

  it('joins a long option split over several instances (RFC 3396) and splits it again', () => {
    const long = Uint8Array.from({ length: 600 }, (_, i) => i & 0xff);
    const p: DhcpPacket = {
      ...decodeDhcp(discoverBytes()),
      options: [
        { code: 43, data: long },
        { code: 53, data: Uint8Array.of(2) },
      ],
    };
    const bytes = encodeDhcp(p);
    // Three instances of option 43: 255 + 255 + 90 bytes.
    expect(bytes[240]).toBe(43);
    expect(bytes[241]).toBe(255);
    expect(bytes[240 + 257]).toBe(43);
    expect(decodeDhcp(bytes).options).toEqual(p.options);
  });

  it('PXE vendor sub-options round trip (43: discovery control, menu, prompt)', () => {
    const subs: [number, Uint8Array][] = [
      [6, Uint8Array.of(8)],
      [9, Uint8Array.from([0x80, 0x00, 6, ...Buffer.from('Rescue')])],
      [10, Uint8Array.from([0, ...Buffer.from('PXE')])],
    ];
    const m = decodeSubOptions(encodeSubOptions(subs));
    expect([...m.entries()].map(([k, v]) => [k, [...v]])).toEqual(subs.map(([k, v]) => [k, [...v]]));
  });

  it('refuses what is not DHCP with DhcpDecodeError', () => {
    expect(() => decodeDhcp(Buffer.alloc(100))).toThrow(DhcpDecodeError);
    const noCookie = discoverBytes();
    noCookie.writeUInt32BE(0, 236);
    expect(() => decodeDhcp(noCookie)).toThrow(/magic cookie/);
    const truncated = discoverBytes().subarray(0, 250); // inside option 93's value
    expect(() => decodeDhcp(truncated)).toThrow(DhcpDecodeError);
    const badHlen = discoverBytes();
    badHlen[2] = 17;
    expect(() => decodeDhcp(badHlen)).toThrow(/hardware address length/);
  });
});

const ipArb = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.'));
const textArb = (max: number) =>
  fc.string({ maxLength: max, unit: fc.integer({ min: 1, max: 255 }).map((c) => String.fromCharCode(c)) });
const packetArb: fc.Arbitrary<DhcpPacket> = fc.record({
  op: fc.constantFrom(1, 2),
  htype: fc.nat(255),
  hlen: fc.nat(16),
  hops: fc.nat(255),
  xid: fc.nat(0xffffffff),
  secs: fc.nat(0xffff),
  flags: fc.nat(0xffff),
  ciaddr: ipArb,
  yiaddr: ipArb,
  siaddr: ipArb,
  giaddr: ipArb,
  chaddr: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  sname: textArb(63),
  file: textArb(127),
  options: fc
    .uniqueArray(
      fc.integer({ min: 1, max: 254 }).filter((c) => c !== 52),
      { maxLength: 12 },
    )
    .chain((codes) =>
      fc.tuple(...codes.map((code) => fc.uint8Array({ maxLength: 400 }).map((data) => ({ code, data })))),
    ),
});

describe('DHCP codec properties', () => {
  it('decode(encode(p)) = p for any packet', () => {
    fc.assert(
      fc.property(packetArb, (p) => {
        expect(decodeDhcp(encodeDhcp(p))).toEqual(p);
      }),
      { numRuns: 500 },
    );
  });

  it('fuzz: random bytes and mutated packets give a packet or DhcpDecodeError, nothing else', () => {
    const valid = discoverBytes();
    const mutated = fc
      .array(fc.tuple(fc.nat(valid.length + 20), fc.nat(255)), { minLength: 1, maxLength: 12 })
      .chain((muts) =>
        fc.nat(valid.length + 20).map((len) => {
          const b = Buffer.alloc(len);
          valid.copy(b, 0, 0, Math.min(len, valid.length));
          for (const [at, v] of muts) if (at < len) b[at] = v;
          return b;
        }),
      );
    const random = fc.uint8Array({ maxLength: 600 }).map((u) => {
      const b = Buffer.from(u);
      if (b.length >= 240) b.writeUInt32BE(0x63825363, 236); // get past the cookie check often
      return b;
    });
    fc.assert(
      fc.property(fc.oneof(mutated, random), (b) => {
        try {
          const p = decodeDhcp(b);
          // Whatever decodes also encodes and decodes the same.
          expect(decodeDhcp(encodeDhcp(p)).options).toEqual(p.options);
          for (const read of [
            clientArchitectures,
            clientUuid,
            clientNdi,
            userClasses,
            vendorClass,
            isIpxe,
            macOf,
          ])
            read(p);
        } catch (e) {
          if (!(e instanceof DhcpDecodeError)) throw e;
        }
      }),
      { numRuns: 3000 },
    );
  });
});
