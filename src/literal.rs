//! String enums whose JS spellings and TypeScript unions come from one declaration.

/// Declares an enum of JS string literals: the enum, `ALL`, `as_str`, and a `.d.ts` union
/// constant all come from the same lines, so Rust and TypeScript cannot drift apart.
macro_rules! string_enum {
    (
        $(#[doc = $enum_doc:literal])*
        pub enum $name:ident as $ts_const:ident = $ts_head:literal {
            $($(#[doc = $doc:literal])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[doc = $enum_doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[doc = $doc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value as JS sees it.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// The TypeScript literal union of every value.
        pub const $ts_const: &str = concat!($ts_head, $(" | \"", $text, "\"",)+ ";\n");
    };
}

pub(crate) use string_enum;
