// The official JavaScript SDKs as an oracle for the Python tests.
//
// Reads a JSON array of requests on stdin and writes a JSON array of answers (same
// order) on stdout. Every answer is what @solana/spl-stake-pool, @solana/spl-token or
// @solana/web3.js produce themselves: instructions as {programId, keys: [[pubkey,
// isSigner, isWritable]], data (hex)}, account data as hex, decoded accounts as JSON.
// A request that throws answers {error: message}.
//
// Requests ({op, ...}):
//   builder        StakePoolInstruction.<name>(params): name depositSol, depositStake,
//                  withdrawSol or withdrawStake; addresses base58, amounts decimal strings
//   ata            getAssociatedTokenAddressSync + createAssociatedTokenAccountIdempotentInstruction
//   authorize      StakeProgram.authorize (web3.js)
//   createWithSeed SystemProgram.createAccountWithSeed (web3.js)
//   encodeStakePool / encodeValidatorList   the SDK's layouts, encoded
//   decodeStakePool / decodeValidatorList   the SDK's layouts, decoded
//   sdk            a high-level SDK function (depositSol, depositStake, withdrawSol,
//                  withdrawStake, stakePoolInfo) with a web3.js Connection to `rpc`
'use strict';

const web3 = require('@solana/web3.js');
const token = require('@solana/spl-token');
const pool = require('@solana/spl-stake-pool');
const BN = require('bn.js');

const { PublicKey } = web3;

function key(text) {
  return new PublicKey(text);
}

function instruction(ix) {
  return {
    programId: ix.programId.toBase58(),
    keys: ix.keys.map((k) => [k.pubkey.toBase58(), k.isSigner, k.isWritable]),
    data: Buffer.from(ix.data).toString('hex'),
  };
}

// JSON-safe values: BN and bigint as decimal strings, keys as base58.
function plain(value) {
  if (value === null || value === undefined) return null;
  if (BN.isBN(value)) return value.toString(10);
  if (typeof value === 'bigint') return value.toString(10);
  if (value instanceof PublicKey) return value.toBase58();
  if (Buffer.isBuffer(value)) return value.toString('hex');
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

function fee(f) {
  return f === null || f === undefined
    ? null
    : { denominator: new BN(f.denominator), numerator: new BN(f.numerator) };
}

function optionalKey(text) {
  return text === null || text === undefined ? null : key(text);
}

function stakePoolValue(p) {
  return {
    accountType: 1,
    manager: key(p.manager),
    staker: key(p.staker),
    stakeDepositAuthority: key(p.stakeDepositAuthority),
    stakeWithdrawBumpSeed: p.stakeWithdrawBumpSeed,
    validatorList: key(p.validatorList),
    reserveStake: key(p.reserveStake),
    poolMint: key(p.poolMint),
    managerFeeAccount: key(p.managerFeeAccount),
    tokenProgramId: key(p.tokenProgramId),
    totalLamports: new BN(p.totalLamports),
    poolTokenSupply: new BN(p.poolTokenSupply),
    lastUpdateEpoch: new BN(p.lastUpdateEpoch),
    lockup: {
      unixTimestamp: new BN(p.lockup.unixTimestamp),
      epoch: new BN(p.lockup.epoch),
      custodian: key(p.lockup.custodian),
    },
    epochFee: fee(p.epochFee),
    nextEpochFee: fee(p.nextEpochFee),
    preferredDepositValidatorVoteAddress: optionalKey(p.preferredDepositValidatorVoteAddress),
    preferredWithdrawValidatorVoteAddress: optionalKey(p.preferredWithdrawValidatorVoteAddress),
    stakeDepositFee: fee(p.stakeDepositFee),
    stakeWithdrawalFee: fee(p.stakeWithdrawalFee),
    nextStakeWithdrawalFee: fee(p.nextStakeWithdrawalFee),
    stakeReferralFee: p.stakeReferralFee,
    solDepositAuthority: optionalKey(p.solDepositAuthority),
    solDepositFee: fee(p.solDepositFee),
    solReferralFee: p.solReferralFee,
    solWithdrawAuthority: optionalKey(p.solWithdrawAuthority),
    solWithdrawalFee: fee(p.solWithdrawalFee),
    nextSolWithdrawalFee: fee(p.nextSolWithdrawalFee),
    lastEpochPoolTokenSupply: new BN(p.lastEpochPoolTokenSupply),
    lastEpochTotalLamports: new BN(p.lastEpochTotalLamports),
  };
}

function validatorListValue(list) {
  return {
    accountType: 2,
    maxValidators: list.maxValidators,
    validators: list.validators.map((v) => ({
      activeStakeLamports: new BN(v.activeStakeLamports),
      transientStakeLamports: new BN(v.transientStakeLamports),
      lastUpdateEpoch: new BN(v.lastUpdateEpoch),
      transientSeedSuffixStart: new BN(v.transientSeedSuffixStart),
      transientSeedSuffixEnd: new BN(v.transientSeedSuffixEnd),
      status: v.status,
      voteAccountAddress: key(v.voteAccountAddress),
    })),
  };
}

function encode(layout, value, size) {
  const buffer = Buffer.alloc(size);
  const written = layout.encode(value, buffer);
  return buffer.subarray(0, written).toString('hex');
}

function builder(name, params) {
  const keys = ['stakePool', 'validatorList', 'depositAuthority', 'withdrawAuthority', 'depositStake',
    'validatorStake', 'reserveStake', 'destinationPoolAccount', 'managerFeeAccount',
    'referralPoolAccount', 'poolMint', 'fundingAccount', 'sourceTransferAuthority',
    'sourcePoolAccount', 'destinationSystemAccount', 'destinationStake',
    'destinationStakeAuthority', 'solWithdrawAuthority'];
  const args = {};
  for (const [k, v] of Object.entries(params)) {
    if (keys.includes(k)) args[k] = v === null ? undefined : key(v);
    else args[k] = Number(v);
  }
  for (const [k, v] of Object.entries(args)) {
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new Error(`${k} is not a safe integer`);
  }
  return instruction(pool.StakePoolInstruction[name](args));
}

async function sdk(request) {
  const connection = new web3.Connection(request.rpc, 'confirmed');
  const a = request.args;
  let result;
  switch (request.fn) {
    case 'depositSol':
      result = await pool.depositSol(connection, key(a.stakePool), key(a.from), Number(a.lamports));
      break;
    case 'depositStake':
      result = await pool.depositStake(
        connection, key(a.stakePool), key(a.authorized), key(a.validatorVote), key(a.depositStake));
      break;
    case 'withdrawSol': {
      const amount = Number(a.poolTokens) / web3.LAMPORTS_PER_SOL;
      if (amount * web3.LAMPORTS_PER_SOL !== Number(a.poolTokens)) {
        throw new Error('poolTokens does not survive the SDK\'s conversion to SOL');
      }
      result = await pool.withdrawSol(connection, key(a.stakePool), key(a.owner), key(a.receiver), amount);
      break;
    }
    case 'withdrawStake': {
      const amount = Number(a.poolTokens) / web3.LAMPORTS_PER_SOL;
      if (amount * web3.LAMPORTS_PER_SOL !== Number(a.poolTokens)) {
        throw new Error('poolTokens does not survive the SDK\'s conversion to SOL');
      }
      result = await pool.withdrawStake(
        connection, key(a.stakePool), key(a.owner), amount, Boolean(a.useReserve),
        a.voteAccount ? key(a.voteAccount) : undefined);
      break;
    }
    case 'stakePoolInfo':
      return plain(await pool.stakePoolInfo(connection, key(a.stakePool)));
    default:
      throw new Error(`unknown sdk function ${request.fn}`);
  }
  return {
    instructions: result.instructions.map(instruction),
    signers: (result.signers || []).map((s) => s.publicKey.toBase58()),
  };
}

async function answer(request) {
  switch (request.op) {
    case 'builder':
      return builder(request.name, request.params);
    case 'ata': {
      const programId = key(request.tokenProgram || token.TOKEN_PROGRAM_ID.toBase58());
      const address = token.getAssociatedTokenAddressSync(
        key(request.mint), key(request.owner), true, programId);
      const ix = token.createAssociatedTokenAccountIdempotentInstruction(
        key(request.payer), address, key(request.owner), key(request.mint), programId);
      return { address: address.toBase58(), instruction: instruction(ix) };
    }
    case 'authorize': {
      const type = request.role === 'staker'
        ? web3.StakeAuthorizationLayout.Staker
        : web3.StakeAuthorizationLayout.Withdrawer;
      const tx = web3.StakeProgram.authorize({
        stakePubkey: key(request.stakeAccount),
        authorizedPubkey: key(request.authority),
        newAuthorizedPubkey: key(request.newAuthority),
        stakeAuthorizationType: type,
      });
      return instruction(tx.instructions[0]);
    }
    case 'createWithSeed':
      return instruction(web3.SystemProgram.createAccountWithSeed({
        fromPubkey: key(request.from),
        newAccountPubkey: key(request.newAccount),
        basePubkey: key(request.base),
        seed: request.seed,
        lamports: Number(request.lamports),
        space: Number(request.space),
        programId: key(request.owner),
      }));
    case 'encodeStakePool':
      return encode(pool.StakePoolLayout, stakePoolValue(request.pool), 4096);
    case 'encodeValidatorList':
      return encode(pool.ValidatorListLayout, validatorListValue(request.list), 16 + 73 * request.list.validators.length);
    case 'decodeStakePool':
      return plain(pool.StakePoolLayout.decode(Buffer.from(request.data, 'hex')));
    case 'decodeValidatorList':
      return plain(pool.ValidatorListLayout.decode(Buffer.from(request.data, 'hex')));
    case 'sdk':
      return sdk(request);
    default:
      throw new Error(`unknown op ${request.op}`);
  }
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const requests = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const answers = [];
  for (const request of requests) {
    try {
      answers.push(await answer(request));
    } catch (error) {
      answers.push({ error: String(error && error.message ? error.message : error) });
    }
  }
  process.stdout.write(JSON.stringify(answers));
}

// The SDK logs (console.info) while it builds: keep stdout for the answers.
console.info = () => {};
console.log = () => {};
main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error));
  process.exit(1);
});
