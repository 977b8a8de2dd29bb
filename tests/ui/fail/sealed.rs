//! The check traits the generated code calls are sealed: no impl outside idem can make a
//! check pass or turn it ambiguous.
use idem_core::__private::{IdemResult, KeyArgument};

struct Handle;
enum Mine {}

impl KeyArgument<Mine> for Handle {
    type Checked = ();

    fn as_checked(&self) -> &() {
        &()
    }
}

struct NotAResult;

impl IdemResult for NotAResult {
    type Ok = ();
    type Err = ();

    fn into_result(self) -> Result<(), ()> {
        Ok(())
    }

    fn from_result(_: Result<(), ()>) -> Self {
        NotAResult
    }
}

fn main() {}
