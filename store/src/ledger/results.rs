//! One result per event, one code per failure cause. Listed in order of
//! precedence: when several apply, the first listed is reported. The
//! numbers are the proto enum's (`strongbox.v1.CreateAccountResult` and
//! `CreateTransferResult`); a test in `api` keeps the two in step.

use serde::{Deserialize, Serialize};

macro_rules! results {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $n:literal => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(u32)]
        pub enum $name {
            $($variant = $n,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The snake_case name (TigerBeetle's).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            pub fn code(self) -> u32 {
                self as u32
            }

            pub fn from_code(code: i32) -> Option<Self> {
                Self::ALL.iter().copied().find(|r| i64::from(r.code()) == i64::from(code))
            }
        }
    };
}

results! {
    /// The outcome of one `create_accounts` event.
    CreateAccountResult {
        Ok = 0 => "ok",
        LinkedEventFailed = 1 => "linked_event_failed",
        LinkedEventChainOpen = 2 => "linked_event_chain_open",
        TimestampMustBeZero = 3 => "timestamp_must_be_zero",
        ReservedFlag = 4 => "reserved_flag",
        IdMustNotBeZero = 5 => "id_must_not_be_zero",
        IdMustNotBeIntMax = 6 => "id_must_not_be_int_max",
        ExistsWithDifferentFlags = 7 => "exists_with_different_flags",
        ExistsWithDifferentUserData128 = 8 => "exists_with_different_user_data_128",
        ExistsWithDifferentUserData64 = 9 => "exists_with_different_user_data_64",
        ExistsWithDifferentUserData32 = 10 => "exists_with_different_user_data_32",
        ExistsWithDifferentLedger = 11 => "exists_with_different_ledger",
        ExistsWithDifferentCode = 12 => "exists_with_different_code",
        Exists = 13 => "exists",
        FlagsAreMutuallyExclusive = 14 => "flags_are_mutually_exclusive",
        DebitsPendingMustBeZero = 15 => "debits_pending_must_be_zero",
        DebitsPostedMustBeZero = 16 => "debits_posted_must_be_zero",
        CreditsPendingMustBeZero = 17 => "credits_pending_must_be_zero",
        CreditsPostedMustBeZero = 18 => "credits_posted_must_be_zero",
        LedgerMustNotBeZero = 19 => "ledger_must_not_be_zero",
        CodeMustNotBeZero = 20 => "code_must_not_be_zero",
    }
}

results! {
    /// The outcome of one `create_transfers` event.
    CreateTransferResult {
        Ok = 0 => "ok",
        LinkedEventFailed = 1 => "linked_event_failed",
        LinkedEventChainOpen = 2 => "linked_event_chain_open",
        TimestampMustBeZero = 3 => "timestamp_must_be_zero",
        ReservedFlag = 4 => "reserved_flag",
        IdMustNotBeZero = 5 => "id_must_not_be_zero",
        IdMustNotBeIntMax = 6 => "id_must_not_be_int_max",
        ExistsWithDifferentFlags = 7 => "exists_with_different_flags",
        ExistsWithDifferentPendingId = 8 => "exists_with_different_pending_id",
        ExistsWithDifferentTimeout = 9 => "exists_with_different_timeout",
        ExistsWithDifferentDebitAccountId = 10 => "exists_with_different_debit_account_id",
        ExistsWithDifferentCreditAccountId = 11 => "exists_with_different_credit_account_id",
        ExistsWithDifferentAmount = 12 => "exists_with_different_amount",
        ExistsWithDifferentUserData128 = 13 => "exists_with_different_user_data_128",
        ExistsWithDifferentUserData64 = 14 => "exists_with_different_user_data_64",
        ExistsWithDifferentUserData32 = 15 => "exists_with_different_user_data_32",
        ExistsWithDifferentLedger = 16 => "exists_with_different_ledger",
        ExistsWithDifferentCode = 17 => "exists_with_different_code",
        Exists = 18 => "exists",
        FlagsAreMutuallyExclusive = 19 => "flags_are_mutually_exclusive",
        DebitAccountIdMustNotBeZero = 20 => "debit_account_id_must_not_be_zero",
        DebitAccountIdMustNotBeIntMax = 21 => "debit_account_id_must_not_be_int_max",
        CreditAccountIdMustNotBeZero = 22 => "credit_account_id_must_not_be_zero",
        CreditAccountIdMustNotBeIntMax = 23 => "credit_account_id_must_not_be_int_max",
        AccountsMustBeDifferent = 24 => "accounts_must_be_different",
        PendingIdMustBeZero = 25 => "pending_id_must_be_zero",
        PendingIdMustNotBeZero = 26 => "pending_id_must_not_be_zero",
        PendingIdMustNotBeIntMax = 27 => "pending_id_must_not_be_int_max",
        PendingIdMustBeDifferent = 28 => "pending_id_must_be_different",
        TimeoutReservedForPendingTransfer = 29 => "timeout_reserved_for_pending_transfer",
        ClosingTransferMustBePending = 30 => "closing_transfer_must_be_pending",
        LedgerMustNotBeZero = 31 => "ledger_must_not_be_zero",
        CodeMustNotBeZero = 32 => "code_must_not_be_zero",
        DebitAccountNotFound = 33 => "debit_account_not_found",
        CreditAccountNotFound = 34 => "credit_account_not_found",
        AccountsMustHaveTheSameLedger = 35 => "accounts_must_have_the_same_ledger",
        TransferMustHaveTheSameLedgerAsAccounts = 36 => "transfer_must_have_the_same_ledger_as_accounts",
        PendingTransferNotFound = 37 => "pending_transfer_not_found",
        PendingTransferNotPending = 38 => "pending_transfer_not_pending",
        PendingTransferHasDifferentDebitAccountId = 39 => "pending_transfer_has_different_debit_account_id",
        PendingTransferHasDifferentCreditAccountId = 40 => "pending_transfer_has_different_credit_account_id",
        PendingTransferHasDifferentLedger = 41 => "pending_transfer_has_different_ledger",
        PendingTransferHasDifferentCode = 42 => "pending_transfer_has_different_code",
        ExceedsPendingTransferAmount = 43 => "exceeds_pending_transfer_amount",
        PendingTransferHasDifferentAmount = 44 => "pending_transfer_has_different_amount",
        PendingTransferAlreadyPosted = 45 => "pending_transfer_already_posted",
        PendingTransferAlreadyVoided = 46 => "pending_transfer_already_voided",
        PendingTransferExpired = 47 => "pending_transfer_expired",
        DebitAccountAlreadyClosed = 48 => "debit_account_already_closed",
        CreditAccountAlreadyClosed = 49 => "credit_account_already_closed",
        OverflowsDebitsPending = 50 => "overflows_debits_pending",
        OverflowsCreditsPending = 51 => "overflows_credits_pending",
        OverflowsDebitsPosted = 52 => "overflows_debits_posted",
        OverflowsCreditsPosted = 53 => "overflows_credits_posted",
        OverflowsDebits = 54 => "overflows_debits",
        OverflowsCredits = 55 => "overflows_credits",
        OverflowsTimeout = 56 => "overflows_timeout",
        ExceedsCredits = 57 => "exceeds_credits",
        ExceedsDebits = 58 => "exceeds_debits",
        // Out of precedence order (it comes right after the id checks) only
        // here: a variant's place is its stored encoding.
        IdAlreadyFailed = 59 => "id_already_failed",
    }
}

impl CreateTransferResult {
    /// Whether this failure depends on the state it met (an account not
    /// there yet, a limit, a closed account), so the same transfer could
    /// pass later. Such an id is kept as failed: a retry gets
    /// `id_already_failed`, never a late success the client already
    /// reported as declined (TigerBeetle's transient errors).
    pub fn transient(self) -> bool {
        use CreateTransferResult as R;
        matches!(
            self,
            R::DebitAccountNotFound
                | R::CreditAccountNotFound
                | R::PendingTransferNotFound
                | R::ExceedsCredits
                | R::ExceedsDebits
                | R::DebitAccountAlreadyClosed
                | R::CreditAccountAlreadyClosed
        )
    }
}
