// A throwaway CA and a serving certificate for 127.0.0.1/localhost, made with the openssl CLI
// (Node's crypto makes keys but not certificates). EC P-256 keeps generation fast.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface ServingCert {
  caPem: string;
  certPem: string;
  keyPem: string;
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
}

export function makeServingCert(dir: string): ServingCert {
  const f = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl([
    'req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '2',
    '-subj', '/CN=kelp-test-kube-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  openssl(['req', '-new', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=kube-apiserver']);
  writeFileSync(
    f('server.ext'),
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '',
    ].join('\n'),
  );
  openssl([
    'x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-out', f('server.crt'), '-days', '2', '-extfile', f('server.ext'),
  ]);
  return {
    caPem: readFileSync(f('ca.crt'), 'utf8'),
    certPem: readFileSync(f('server.crt'), 'utf8'),
    keyPem: readFileSync(f('server.key'), 'utf8'),
  };
}
