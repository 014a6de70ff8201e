// One webhook receiver per org (test/helpers/receiver.ts), with faults switched on and off by the
// chaos run: `fail` answers 500, `hang` never answers (the server's WEBHOOK_TIMEOUT cuts it off).
// Every delivery is checked on arrival: its signature against each secret the org has had (after
// a rotation the server signs with both for a while, and a delivery signed just before it carries
// only the old one; Standard Webhooks receivers accept any secret they hold), and that the event
// belongs to this org (the payload carries the org's index) and the body names the webhook-id.
import { Receiver, verifyDelivery, type Answer, type Received } from '../../test/helpers/receiver.ts';

export type ReceiverMode = 'ok' | 'fail' | 'hang';

export class OrgReceiver {
  mode: ReceiverMode = 'ok';
  /** Webhook requests received, faults included. */
  deliveries = 0;
  /** Event ids this receiver answered 2xx. */
  readonly accepted = new Set<string>();
  /** Event id → the payload token its delivery carried. */
  readonly tokens = new Map<string, string>();
  readonly invalidSignatures: string[] = [];
  /** Deliveries whose body belongs to another org or does not match its webhook-id. */
  readonly foreign: string[] = [];
  private readonly secrets: string[] = [];

  private constructor(
    readonly org: number,
    private readonly receiver: Receiver,
  ) {
    receiver.policy = (request) => this.answer(request);
  }

  static async start(org: number): Promise<OrgReceiver> {
    return new OrgReceiver(org, await Receiver.start());
  }

  get url(): string {
    return this.receiver.url;
  }

  /** A secret the org's endpoint has (had): deliveries signed with it are genuine. */
  addSecret(secret: string): void {
    if (!this.secrets.includes(secret)) this.secrets.push(secret);
  }

  private verifies(request: Received): boolean {
    return this.secrets.some((secret) => {
      try {
        verifyDelivery(secret, request);
        return true;
      } catch {
        return false;
      }
    });
  }

  private answer(request: Received): Answer {
    this.deliveries++;
    if (!this.verifies(request)) this.invalidSignatures.push(request.id);
    const body = request.body;
    if (body?.id !== request.id || body?.data?.org !== this.org) {
      this.foreign.push(`${request.id} (body id ${body?.id}, org ${body?.data?.org})`);
    }
    this.tokens.set(request.id, String(body?.data?.token));
    if (this.mode === 'fail') return { status: 500 };
    if (this.mode === 'hang') return { hang: true };
    this.accepted.add(request.id);
    return { status: 200 };
  }

  close(): Promise<void> {
    return this.receiver.close();
  }
}
