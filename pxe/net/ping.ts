/**
 * The conflict check of full-DHCP mode: does any machine answer at an address before it is offered?
 * One ICMP echo through the system's `ping` (iputils, or busybox's on the rescue system), sent out of
 * the boot interface, waiting one second.
 */
import { spawn } from 'node:child_process';

export function pingProbe(iface: string, onMissing?: () => void): (ip: string) => Promise<boolean> {
  let missing = false;
  return (ip) =>
    new Promise((resolve) => {
      if (missing) return resolve(false);
      const child = spawn('ping', ['-c', '1', '-W', '1', '-I', iface, ip], { stdio: 'ignore' });
      child.once('error', () => {
        missing = true;
        onMissing?.();
        resolve(false);
      });
      child.once('exit', (code) => resolve(code === 0));
    });
}
