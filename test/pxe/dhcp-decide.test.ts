/**
 * The PXE server's answers, as decided from requests built with the codec: boot file by
 * architecture, the iPXE loop broken by user class / option 175, proxy replies without an address,
 * full replies with the lease, the UUID echoed, non-PXE clients left alone in proxy mode. Every reply
 * goes through encode → decode, so it is a packet a client could parse.
 */
import { describe, expect, it } from 'vitest';
import {
  BOOTREPLY,
  BOOTREQUEST,
  type DhcpOption,
  type DhcpPacket,
  decodeDhcp,
  decodeSubOptions,
  encodeDhcp,
  MESSAGE,
  macOf,
  messageType,
  OPT,
  option,
} from '../../pxe/dhcp/codec.ts';
import { type BootPlan, decide, nak } from '../../pxe/dhcp/decide.ts';

const PLAN: BootPlan = {
  serverIp: '192.0.2.1',
  bios: 'undionly.kpxe',
  uefi: 'snponly.efi',
  ipxeScriptUrl: 'http://192.0.2.1/boot.ipxe',
};
const UUID = Uint8Array.from([0, ...Array.from({ length: 16 }, (_, i) => i + 1)]);
const text = (s: string) => Uint8Array.from(Buffer.from(s));

function request(type: number, extra: DhcpOption[], arch?: number): DhcpPacket {
  const options: DhcpOption[] = [{ code: OPT.MESSAGE_TYPE, data: Uint8Array.of(type) }];
  if (arch !== undefined) {
    options.push({ code: OPT.CLIENT_ARCH, data: Uint8Array.of(arch >> 8, arch & 0xff) });
    options.push({
      code: OPT.VENDOR_CLASS,
      data: text(`PXEClient:Arch:${String(arch).padStart(5, '0')}:UNDI:003016`),
    });
    options.push({ code: OPT.CLIENT_UUID, data: UUID });
  }
  options.push(...extra);
  return {
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 0x1234,
    secs: 0,
    flags: 0x8000,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    chaddr: Uint8Array.from([0x52, 0x54, 0, 1, 2, 3, ...new Array(10).fill(0)]),
    sname: '',
    file: '',
    options,
  };
}

/** decide(), then the reply as a client would receive it. */
function answer(req: DhcpPacket, mode: 'proxy' | 'full' = 'proxy', lease?: Parameters<typeof decide>[3]) {
  const d = decide(decodeDhcp(encodeDhcp(req)), PLAN, mode, lease);
  return { ...d, received: d.reply ? decodeDhcp(encodeDhcp(d.reply)) : undefined };
}

describe('PXE DHCP decisions', () => {
  it('BIOS (arch 0) gets undionly.kpxe by TFTP from us, no address, its UUID echoed', () => {
    const { received, trace, client } = answer(request(MESSAGE.DISCOVER, [], 0));
    expect(client).toMatchObject({ mac: '52:54:00:01:02:03', arch: 0, pxe: true, ipxe: false });
    expect(messageType(received!)).toBe(MESSAGE.OFFER);
    expect(received!.yiaddr).toBe('0.0.0.0');
    expect(received!.siaddr).toBe('192.0.2.1');
    expect(received!.file).toBe('undionly.kpxe');
    expect(Buffer.from(option(received!, OPT.BOOTFILE)!).toString()).toBe('undionly.kpxe');
    expect([...option(received!, OPT.CLIENT_UUID)!]).toEqual([...UUID]);
    expect(Buffer.from(option(received!, OPT.VENDOR_CLASS)!).toString()).toBe('PXEClient');
    expect([...decodeSubOptions(option(received!, OPT.VENDOR_SPECIFIC)!).get(6)!]).toEqual([8]);
    expect(received!.xid).toBe(0x1234);
    expect(trace.join(' → ')).toBe('arch 0 (BIOS) → undionly.kpxe (TFTP) → OFFER (proxy, no address)');
  });

  it('x64 UEFI as arch 7 and as arch 9 gets snponly.efi', () => {
    for (const arch of [7, 9]) {
      const { received, trace } = answer(request(MESSAGE.DISCOVER, [], arch));
      expect(received!.file).toBe('snponly.efi');
      expect(trace[1]).toBe('snponly.efi (TFTP)');
    }
  });

  it('iPXE (user class "iPXE", or option 175) gets the HTTP boot script: the loop is broken', () => {
    const byClass = answer(request(MESSAGE.DISCOVER, [{ code: OPT.USER_CLASS, data: text('iPXE') }], 7));
    expect(byClass.bootFile).toBe('http://192.0.2.1/boot.ipxe');
    expect(byClass.received!.file).toBe('http://192.0.2.1/boot.ipxe');
    const by175 = answer(request(MESSAGE.REQUEST, [{ code: OPT.IPXE, data: Uint8Array.of(19, 1, 1) }], 0));
    expect(messageType(by175.received!)).toBe(MESSAGE.ACK);
    expect(by175.trace).toContain('iPXE → http://192.0.2.1/boot.ipxe');
  });

  it('proxy mode leaves clients that are not PXE to the network’s DHCP server', () => {
    const d = answer(request(MESSAGE.DISCOVER, [{ code: OPT.HOSTNAME, data: text('laptop') }]));
    expect(d.reply).toBeUndefined();
    expect(d.trace).toEqual(['not a PXE client: left to the network’s DHCP server']);
  });

  it('full mode leases the address it is given, with mask, router, DNS and lease time — PXE or not', () => {
    const lease = {
      ip: '192.0.2.50',
      mask: '255.255.255.0',
      router: '192.0.2.1',
      dns: ['192.0.2.1'],
      seconds: 3600,
    };
    const pxe = answer(request(MESSAGE.DISCOVER, [], 7), 'full', lease).received!;
    expect(pxe.yiaddr).toBe('192.0.2.50');
    expect([...option(pxe, OPT.SUBNET_MASK)!]).toEqual([255, 255, 255, 0]);
    expect([...option(pxe, OPT.ROUTER)!]).toEqual([192, 0, 2, 1]);
    expect(Buffer.from(option(pxe, OPT.LEASE_TIME)!).readUInt32BE(0)).toBe(3600);
    expect(pxe.file).toBe('snponly.efi');
    // Firmware PXE gets no iPXE options; iPXE is told not to wait for a ProxyDHCP offer (175.176).
    expect(option(pxe, OPT.IPXE)).toBeUndefined();
    const ipxe = answer(
      request(MESSAGE.DISCOVER, [{ code: OPT.USER_CLASS, data: text('iPXE') }], 7),
      'full',
      lease,
    ).received!;
    expect([...decodeSubOptions(option(ipxe, OPT.IPXE)!).get(176)!]).toEqual([1]);
    expect(
      option(
        answer(request(MESSAGE.DISCOVER, [{ code: OPT.USER_CLASS, data: text('iPXE') }], 7)).received!,
        OPT.IPXE,
      ),
    ).toBeUndefined();
    const plain = answer(request(MESSAGE.DISCOVER, []), 'full', lease).received!;
    expect(plain.yiaddr).toBe('192.0.2.50');
    expect(option(plain, OPT.BOOTFILE)).toBeUndefined();
    expect(option(plain, OPT.VENDOR_CLASS)).toBeUndefined();
    expect(answer(request(MESSAGE.DISCOVER, []), 'full').trace).toEqual([
      'no free address in the range: not answered',
    ]);
  });

  it('architectures without a boot file are not answered in proxy mode, and other messages are ignored', () => {
    expect(answer(request(MESSAGE.DISCOVER, [], 6)).trace).toEqual([
      'arch 6 (UEFI IA32)',
      'no boot file for this architecture: not answered',
    ]);
    expect(answer(request(MESSAGE.RELEASE, [], 0)).reply).toBeUndefined();
    expect(answer({ ...request(MESSAGE.DISCOVER, [], 0), op: 2 }).trace).toEqual(['not a request: ignored']);
  });

  it('a NAK goes to the client’s transaction by broadcast, naming this server and nothing else', () => {
    const req = request(MESSAGE.REQUEST, [], 0);
    const n = decodeDhcp(encodeDhcp(nak({ ...req, flags: 0 }, '192.0.2.1')));
    expect(messageType(n)).toBe(MESSAGE.NAK);
    expect(n.op).toBe(BOOTREPLY);
    expect(n.xid).toBe(0x1234);
    expect(n.flags & 0x8000).toBe(0x8000);
    expect([n.ciaddr, n.yiaddr, n.siaddr]).toEqual(['0.0.0.0', '0.0.0.0', '0.0.0.0']);
    expect(macOf(n)).toBe('52:54:00:01:02:03');
    expect(n.options.map((o) => o.code)).toEqual([OPT.MESSAGE_TYPE, OPT.SERVER_ID]);
    expect([...option(n, OPT.SERVER_ID)!]).toEqual([192, 0, 2, 1]);
  });
});
