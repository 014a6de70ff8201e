// `triggers`: the command line client (commander). Every command is a thin layer over
// TriggersClient; errors become one line on stderr and an exit code (see EXIT_CODES_HELP).
import { Command, CommanderError, Option } from 'commander';
import { TriggersClient, type Tier } from './index.ts';
import { ackIds, showInbox, tail } from './cli/inbox.ts';
import { listen } from './cli/listen.ts';
import { EXIT, EXIT_CODES_HELP, integer, printJson, report, UsageError } from './cli/output.ts';
import { sendOne, sendStream } from './cli/send.ts';

interface GlobalOptions {
  url: string;
  key?: string;
  adminToken?: string;
  retries: number;
  timeout: number;
}

const TIERS = ['free', 'pro', 'business', 'enterprise'];
const STATUSES = ['pending', 'delivered', 'failed', 'acknowledged', 'all'];
const WEBHOOK_SECRET = /^whsec_[A-Za-z0-9+/]+={0,2}$/;

/** The client for a command, from the global options; `key` commands refuse to run without a key. */
function clientFor(command: Command, needsKey = true): TriggersClient {
  const options = command.optsWithGlobals<GlobalOptions>();
  let url: URL;
  try {
    url = new URL(options.url);
  } catch {
    throw new UsageError(`--url is not a URL: ${options.url}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--url must be http or https: ${options.url}`);
  if (needsKey && !options.key) throw new UsageError('no API key: pass --key or set TRIGGERS_API_KEY');
  return new TriggersClient({ baseUrl: options.url, apiKey: options.key, adminToken: options.adminToken, retries: options.retries, timeout: options.timeout });
}

const statusOption = () => new Option('--status <status>', 'pending, delivered, failed, acknowledged or all (default: pending + failed)').choices(STATUSES);

const program = new Command('triggers')
  .description('Send events to the Triggers API, read and acknowledge the inbox, manage keys and webhooks.')
  .addOption(new Option('--url <url>', 'API base URL').env('TRIGGERS_URL').default('http://127.0.0.1:8080'))
  .addOption(new Option('--key <key>', 'API key of the organization').env('TRIGGERS_API_KEY'))
  .addOption(new Option('--admin-token <token>', 'for `keys create` when the server has an ADMIN_TOKEN').env('TRIGGERS_ADMIN_TOKEN'))
  .addOption(new Option('--retries <n>', 'retries on 429/503 and lost answers').default(3).argParser(integer(0, 20)))
  .addOption(new Option('--timeout <ms>', 'per-request timeout in ms').default(30_000).argParser(integer(1, 600_000)))
  .addHelpText('afterAll', EXIT_CODES_HELP)
  .showHelpAfterError('(run with --help for usage)')
  // Subcommands inherit this: commander's usage errors are thrown, and mapped to exit 2 below.
  .exitOverride();

const keys = program.command('keys').description('create, show and rotate API keys');
keys.command('create <organization>')
  .description('create an organization and print its key (shown once)')
  .addOption(new Option('--tier <tier>', 'rate-limit tier').choices(TIERS).default('free'))
  .action(async (organization: string, options: { tier: Tier }, command: Command) => {
    printJson(await clientFor(command, false).generateKey(organization, { tier: options.tier }));
  });
keys.command('show').description('the organization behind the key')
  .action(async (_options, command: Command) => printJson(await clientFor(command).getKey()));
keys.command('rotate').description('replace the key; the old one stops working at once')
  .action(async (_options, command: Command) => printJson(await clientFor(command).rotateKey()));

program.command('send [type] [payload-json]')
  .description('send one event (prints its id), or NDJSON from stdin: one {"type","payload","dedup_id"?} per line, sent in batches of 1000')
  .option('--dedup-id <id>', 'dedup_id of the single event (default: generated, kept across retries)')
  .option('--json', 'print the result (or the NDJSON summary) as JSON')
  .addHelpText('after', `
Examples:
  triggers send order.created '{"order_id": 42}'
  triggers send - < events.ndjson       (also without "-" when stdin is not a terminal)`)
  .action(async (type: string | undefined, payload: string | undefined, options: { dedupId?: string; json?: boolean }, command: Command) => {
    const client = clientFor(command);
    if (type === '-' || (type === undefined && !process.stdin.isTTY)) {
      if (payload !== undefined || options.dedupId !== undefined) throw new UsageError('NDJSON from stdin takes no payload argument or --dedup-id: put dedup_id on each line');
      process.exitCode = await sendStream(client, process.stdin, options);
      return;
    }
    if (type === undefined) throw new UsageError('send needs an event type, or NDJSON lines on stdin (send -)');
    await sendOne(client, type, payload, options);
  });

program.command('get <id>').description('show one event with its delivery attempts')
  .action(async (id: string, _options, command: Command) => printJson(await clientFor(command).getEvent(id)));

program.command('redeliver <id>').description('schedule a fresh round of webhook deliveries for an event')
  .action(async (id: string, _options, command: Command) => printJson(await clientFor(command).redeliver(id)));

program.command('inbox')
  .description('list events (default: one page of pending + failed, oldest first)')
  .addOption(statusOption())
  .option('--type <type>', 'only events of this type')
  .option('--limit <n>', 'page size, 1..1000 (default 100)', integer(1, 1000))
  .addOption(new Option('--order <order>', 'asc (oldest first, default) or desc').choices(['asc', 'desc']))
  .option('--cursor <cursor>', 'continue from a next_cursor')
  .option('--all', 'follow next_cursor through every page')
  .option('--json', 'print {events, next_cursor} as JSON instead of a table')
  .action(async (options, command: Command) => showInbox(clientFor(command), options));

program.command('ack <ids...>').description('acknowledge events: they leave the inbox and are never delivered again')
  .option('--json', 'print {acknowledged, not_found} as JSON')
  .action(async (ids: string[], options: { json?: boolean }, command: Command) => {
    process.exitCode = await ackIds(clientFor(command), ids, options);
  });

program.command('tail')
  .description('print the inbox, then new events as they arrive (polling), until Ctrl-C')
  .addOption(statusOption())
  .option('--type <type>', 'only events of this type')
  .option('--limit <n>', 'page size, 1..1000', integer(1, 1000), 100)
  .option('--interval <ms>', 'poll interval in ms', integer(50, 3_600_000), 1000)
  .option('--ack', 'acknowledge each event once printed')
  .option('--json', 'one JSON object per line')
  .action(async (options, command: Command) => tail(clientFor(command), options));

const webhook = program.command('webhook').description('configure the webhook endpoint');
webhook.command('set <url>').description('set the endpoint URL; prints the signing secret (kept when the URL changes)')
  .action(async (url: string, _options, command: Command) => printJson(await clientFor(command).setWebhook(url)));
webhook.command('show').description('show the endpoint and its secret')
  .action(async (_options, command: Command) => printJson(await clientFor(command).getWebhook()));
webhook.command('rotate').description('new signing secret; for 24 h deliveries are signed with both')
  .action(async (_options, command: Command) => printJson(await clientFor(command).rotateWebhookSecret()));
webhook.command('delete').description('remove the endpoint: deliveries stop, events stay in the inbox')
  .action(async (_options, command: Command) => {
    await clientFor(command).deleteWebhook();
    process.stdout.write('deleted\n');
  });

program.command('listen')
  .description('run a local webhook receiver: verifies each delivery\'s signature, prints the event, answers 400 to a bad one')
  .option('--port <port>', 'port to listen on (0: any free port)', integer(0, 65_535), 4000)
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .addOption(new Option('--secret <whsec>', 'the endpoint\'s signing secret (default: fetched with --key)').env('TRIGGERS_WEBHOOK_SECRET'))
  .option('--json', 'print each verified delivery as one JSON line')
  .action(async (options: { port: number; host: string; secret?: string; json?: boolean }, command: Command) => {
    let secret = options.secret;
    if (secret === undefined) {
      if (!command.optsWithGlobals<GlobalOptions>().key) throw new UsageError('listen needs --secret (or TRIGGERS_WEBHOOK_SECRET), or --key to fetch it');
      secret = (await clientFor(command).getWebhook()).secret ?? undefined;
      if (secret === undefined) throw new UsageError('the server cannot show the endpoint\'s secret: run `triggers webhook set <url>` again');
    }
    if (!WEBHOOK_SECRET.test(secret)) throw new UsageError('--secret must look like whsec_<base64>');
    await listen({ ...options, secret });
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // Commander has already printed its message (or the help, which exits 0).
  process.exitCode = error instanceof CommanderError ? (error.exitCode === 0 ? EXIT.ok : EXIT.usage) : report(error);
}
