# Shared by the rescue system's scripts. They run in busybox sh, which prefers its own applets to
# the programs on PATH: call util-linux and friends by full path where the applet differs.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
STATE=/run/rescue
mkdir -p "$STATE"
# param NAME: prints the value of NAME=VALUE (or 1 for a bare NAME) from the kernel command line.
param() { for a in $(cat /proc/cmdline); do case "$a" in "$1="*) echo "${a#*=}"; return 0 ;; "$1") echo 1; return 0 ;; esac; done; return 1; }
port() { param rescue.port || echo 80; }
# The addresses other computers can reach this one at (IPv4, not loopback).
addresses() { ip -4 -o addr show scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]}'; }
pin() { sed -n 's/.*PIN.* \([0-9]\{6\}\)$/\1/p; s/.*PIN is now \([0-9]\{6\}\)$/\1/p' "$STATE/serve.log" 2>/dev/null | tail -n 1; }
url_for() { p=$(port); if [ "$p" = 80 ]; then echo "http://$1/"; else echo "http://$1:$p/"; fi; }
# The server is up once it said so in its log (busybox-static's wget crashes, so no HTTP probe).
ready() { grep -q '^Rescue is listening' "$STATE/serve.log" 2>/dev/null; }
