// A TypeScript agent that stakes SOL through agent-staking without handing over a key.
//
// It creates (or loads) its own keypair, funds it on the localnet, shows how a
// refused request reads (rich error details), builds a stake transaction over
// gRPC, checks and signs the returned message locally with @solana/kit, submits
// it through the service, watches it land and lists its stake positions.
//
//   npm ci && npm run build
//   AGENT_STAKING_API_KEY=ask_... node dist/agent.js --grpc 127.0.0.1:50051 --rpc http://127.0.0.1:8899

import { existsSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import {
  type CallOptions,
  type ClientUnaryCall,
  credentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  type Address,
  createKeyPairFromBytes,
  createSolanaRpc,
  generateKeyPair,
  getAddressFromPublicKey,
  getTransactionDecoder,
  getTransactionEncoder,
  lamports,
  type Signature,
  signTransaction,
  writeKeyPair,
} from "@solana/kit";

import { describe, isServiceError, richError } from "./errors.js";
import {
  BuildStakeTransactionRequest,
  ListStakeAccountsRequest,
  StakingServiceClient,
  stakeAccountStateToJSON,
  SubmitTransactionRequest,
  WatchTransactionRequest,
} from "./gen/agentstaking/v1/staking.js";
import { Commitment, TransactionState, transactionStateToJSON } from "./gen/agentstaking/v1/types.js";

const CALL_SECONDS = 30;

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** A unary call as a promise, with the API key and a deadline. */
function call<Req, Res>(method: Unary<Req, Res>, metadata: Metadata, request: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(request, metadata, { deadline: Date.now() + CALL_SECONDS * 1000 }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

async function loadOrCreateKeypair(
  path: string,
): Promise<{ keyPair: CryptoKeyPair; wallet: Address }> {
  let keyPair: CryptoKeyPair;
  if (existsSync(path)) {
    // solana-keygen format: a JSON array of 64 bytes (seed, then public key).
    const bytes = Uint8Array.from(JSON.parse(readFileSync(path, "utf8")) as number[]);
    keyPair = await createKeyPairFromBytes(bytes);
    console.log(`keypair: loaded ${path}`);
  } else {
    keyPair = await generateKeyPair(true);
    await writeKeyPair(keyPair, path);
    console.log(`keypair: created ${path}`);
  }
  const wallet = await getAddressFromPublicKey(keyPair.publicKey);
  console.log(`wallet: ${wallet}`);
  return { keyPair, wallet };
}

async function fund(rpcUrl: string, wallet: Address, amount: bigint): Promise<void> {
  const rpc = createSolanaRpc(rpcUrl);
  const signature: Signature = await rpc.requestAirdrop(wallet, lamports(amount)).send();
  for (let attempt = 0; attempt < 300; attempt++) {
    const { value } = await rpc.getSignatureStatuses([signature]).send();
    const [found] = value;
    if (found?.confirmationStatus === "confirmed" || found?.confirmationStatus === "finalized") {
      console.log(`funded: ${amount} lamports (airdrop ${signature})`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`airdrop ${signature} did not land`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      grpc: { type: "string", default: "127.0.0.1:50051" },
      rpc: { type: "string", default: "http://127.0.0.1:8899" },
      keypair: { type: "string", default: "agent-keypair.json" },
      "amount-lamports": { type: "string", default: "2000000000" },
      "api-key-env": { type: "string", default: "AGENT_STAKING_API_KEY" },
      "tls-ca": { type: "string" },
    },
  });
  const apiKey = process.env[values["api-key-env"]] ?? "";
  const channel =
    values["tls-ca"] === undefined
      ? credentials.createInsecure()
      : credentials.createSsl(readFileSync(values["tls-ca"]));
  const client = new StakingServiceClient(values.grpc, channel);
  const metadata = new Metadata();
  if (apiKey) {
    metadata.set("authorization", `Bearer ${apiKey}`);
  }
  const amount = values["amount-lamports"];

  const { keyPair, wallet } = await loadOrCreateKeypair(values.keypair);
  await fund(values.rpc, wallet, BigInt(amount) + 1_000_000_000n);

  // A request the service refuses, read the way an agent corrects itself.
  try {
    await call(
      client.buildStakeTransaction.bind(client),
      metadata,
      BuildStakeTransactionRequest.fromPartial({ wallet, amountLamports: "1000" }),
    );
    throw new Error("a stake of 1000 lamports was accepted");
  } catch (error) {
    if (!isServiceError(error)) {
      throw error;
    }
    for (const line of describe(richError(error))) {
      console.log(`refused: ${line}`);
    }
  }

  // Build: 64-bit integers travel as decimal strings.
  const built = await call(
    client.buildStakeTransaction.bind(client),
    metadata,
    BuildStakeTransactionRequest.fromPartial({ wallet, amountLamports: amount }),
  );
  const prepared = built.transaction;
  if (prepared === undefined) {
    throw new Error("no transaction in the response");
  }
  console.log(`stake account ${built.stakeAccount} -> validator ${built.voteAccount}`);
  for (const instruction of prepared.instructions) {
    console.log(`  ${instruction.programName}.${instruction.type}: ${instruction.description}`);
  }
  console.log(
    `  total debit ${prepared.fees?.totalDebitLamports} lamports ` +
      `(service fee ${prepared.fees?.serviceFeeLamports}); ` +
      `signers: ${prepared.requiredSigners.join(", ")}`,
  );

  // Sign locally: the decoded transaction's message must be the message we were
  // shown, and our wallet its only required signer.
  if (prepared.requiredSigners.length !== 1 || prepared.requiredSigners[0] !== wallet) {
    throw new Error(`unexpected signers: ${prepared.requiredSigners.join(", ")}`);
  }
  const unsigned = getTransactionDecoder().decode(prepared.transaction);
  if (!Buffer.from(unsigned.messageBytes).equals(prepared.message)) {
    throw new Error("the transaction's message differs from the message to sign");
  }
  const signed = await signTransaction([keyPair], unsigned);
  const wire = Buffer.from(getTransactionEncoder().encode(signed));

  const submitted = await call(
    client.submitTransaction.bind(client),
    metadata,
    SubmitTransactionRequest.fromPartial({
      transaction: wire,
      commitment: Commitment.COMMITMENT_CONFIRMED,
    }),
  );
  const signature = submitted.signature;
  const state = submitted.status?.state ?? TransactionState.UNRECOGNIZED;
  console.log(`submitted ${signature}: ${transactionStateToJSON(state)}`);

  // Watch it to the confirmed commitment (a server stream).
  const watch = client.watchTransaction(
    WatchTransactionRequest.fromPartial({ signature, commitment: Commitment.COMMITMENT_CONFIRMED }),
    metadata,
    { deadline: Date.now() + CALL_SECONDS * 1000 },
  );
  let last = TransactionState.UNRECOGNIZED;
  for await (const update of watch as AsyncIterable<{ status?: { state: TransactionState } }>) {
    last = update.status?.state ?? last;
    console.log(`watch: ${transactionStateToJSON(last)}`);
  }
  const landed = [TransactionState.TRANSACTION_STATE_CONFIRMED, TransactionState.TRANSACTION_STATE_FINALIZED];
  if (!landed.includes(last)) {
    throw new Error(`the transaction ended ${transactionStateToJSON(last)}`);
  }

  const positions = await call(
    client.listStakeAccounts.bind(client),
    metadata,
    ListStakeAccountsRequest.fromPartial({ wallet }),
  );
  for (const account of positions.stakeAccounts) {
    console.log(
      `position ${account.address}: ${stakeAccountStateToJSON(account.state)} ` +
        `delegated ${account.delegatedLamports} lamports to ${account.voter}`,
    );
  }
  client.close();
  console.log(
    JSON.stringify({
      wallet,
      stake_account: built.stakeAccount,
      signature,
      positions: positions.stakeAccounts.length,
    }),
  );
}

main().catch((error: unknown) => {
  if (isServiceError(error)) {
    for (const line of describe(richError(error))) {
      console.error(`error: ${line}`);
    }
  } else {
    console.error(error);
  }
  process.exit(1);
});
